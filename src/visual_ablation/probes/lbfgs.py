"""Linear heads fitted to their L2-penalised optimum: full-batch L-BFGS, batched over heads.

The linear evaluation of Kornblith et al. 2019 ("Do Better ImageNet Models Transfer
Better?") and of CLIP (Radford et al. 2021): multinomial logistic regression with an L2
penalty chosen on a validation split, solved to convergence with L-BFGS (scikit-learn's
`LogisticRegression`). Each head minimises

    mean over its train rows of cross-entropy + weight_decay / 2 * ||W||^2

(the bias is not penalised), scikit-learn's objective with C = 1 / (weight_decay *
n_train). The problem is convex, so the head it ends at does not depend on the init, the
minibatch order or a learning rate, and no early stopping is needed: `probe.max_epochs`
bounds the iterations (each one full pass, more where the line search backtracks).

Every head runs its own L-BFGS (its own curvature pairs, step and stopping test), written
with per-head reductions so that all heads of a stack step together. The heads of one
(layer, run) differ only in their weight decay and see the same inputs: they are one
matmul whose output columns are the decays' logits side by side.
"""

from __future__ import annotations

import torch

from visual_ablation.data.splits import TRAIN, VAL

HISTORY = 10  # curvature pairs kept (scipy's L-BFGS-B default)
GRADIENT_TOLERANCE = 1e-4  # largest |gradient| entry at convergence (scikit-learn's tol)
# stop when an iteration lowers the objective by less than this, relative: float32
# logits make smaller changes noise
RELATIVE_DECREASE = 1e-9
ARMIJO = 1e-4  # sufficient decrease of the backtracking line search
MAX_HALVINGS = 30


class _Heads:
    """One layer's linear heads as G groups (its runs) x D weight decays, with each
    group's train inputs [G, n, width] gathered once."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, decays: torch.Tensor, n_classes: int):
        self.x, self.y = x, y  # [G, n, width], [G, n]
        self.decays = decays  # [D], float32
        self.n_classes = n_classes

    def objective(self, w: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, list]:
        """Each head's objective [G, D] (float64) and its gradient (W's [G, width, D*C],
        b's [G, 1, D*C])."""
        g, n, _ = self.x.shape
        d, c = len(self.decays), self.n_classes
        logits = torch.baddbmm(b, self.x, w).view(g, n, d, c)
        logp = torch.log_softmax(logits, dim=3)
        labels = self.y.view(g, n, 1, 1).expand(g, n, d, 1)
        ce = -logp.gather(3, labels).squeeze(3).sum(1, dtype=torch.float64) / n  # [G, D]
        w4 = w.view(g, -1, d, c)
        penalty = 0.5 * self.decays.double() * w4.square().sum((1, 3), dtype=torch.float64)
        grad = logp.exp_()
        grad.scatter_add_(3, labels, torch.full_like(grad[..., :1], -1.0))
        grad = grad.div_(n).view(g, n, d * c)
        grad_w = torch.baddbmm(
            (w4 * self.decays.view(1, 1, d, 1)).view_as(w), self.x.transpose(1, 2), grad
        )
        return ce + penalty, [grad_w, grad.sum(1, keepdim=True)]

    def subset(self, groups: torch.Tensor) -> _Heads:
        return _Heads(self.x[groups], self.y[groups], self.decays, self.n_classes)


def _dot(a: list[torch.Tensor], b: list[torch.Tensor], d: int) -> torch.Tensor:
    """Per-head inner products of two parameter lists ([G, rows, D*C] each): [G, D]."""
    total = 0
    for x, y in zip(a, b, strict=True):
        total = total + (x * y).view(x.shape[0], x.shape[1], d, -1).sum((1, 3), dtype=torch.float64)
    return total


def _scale(v: torch.Tensor, t: torch.Tensor, d: int) -> torch.Tensor:
    """v [G, rows, D*C] with each head's block times its scalar t [G, D]."""
    g, rows, _ = v.shape
    return (v.view(g, rows, d, -1) * t.to(v.dtype).view(g, 1, d, 1)).view_as(v)


def minimise(heads: _Heads, w: torch.Tensor, b: torch.Tensor, max_iter: int):
    """Run each head's L-BFGS from (w, b) to convergence or `max_iter` iterations; returns
    (w, b, iterations [G, D], converged [G, D]). Groups whose heads have all stopped leave
    the arithmetic."""
    d = len(heads.decays)
    n_groups = w.shape[0]
    theta = [w.clone(), b.clone()]
    iters = torch.zeros((n_groups, d), dtype=torch.int64, device=w.device)
    converged = torch.zeros((n_groups, d), dtype=torch.bool, device=w.device)
    live = torch.arange(n_groups, device=w.device)  # groups with a head still running
    part, p = heads, [t.clone() for t in theta]
    f, grad = part.objective(*p)
    pairs: list[tuple[list, list, torch.Tensor]] = []
    gamma = torch.ones_like(f)
    running = torch.ones_like(f, dtype=torch.bool)
    for it in range(1, max_iter + 1):
        # the two-loop recursion: direction = -H grad, H from the last HISTORY pairs
        q = [t.clone() for t in grad]
        alphas = []
        for s, y, rho in reversed(pairs):
            a = rho * _dot(s, q, d)
            alphas.append(a)
            q = [qi - _scale(yi, a, d) for qi, yi in zip(q, y, strict=True)]
        r = [_scale(qi, gamma, d) for qi in q]
        for (s, y, rho), a in zip(pairs, reversed(alphas), strict=True):
            beta = rho * _dot(y, r, d)
            r = [ri + _scale(si, a - beta, d) for ri, si in zip(r, s, strict=True)]
        direction = [-ri for ri in r]
        slope = _dot(grad, direction, d)
        uphill = slope >= 0  # lost curvature: steepest descent for that head
        if bool(uphill.any()):
            direction = [
                di - _scale(di + gi, uphill.double(), d)
                for di, gi in zip(direction, grad, strict=True)
            ]
            slope = torch.where(uphill, -_dot(grad, grad, d), slope)
        step = torch.ones_like(f)
        if it == 1:  # scipy's first step: a unit move along the gradient
            step = torch.clamp(1.0 / _dot(grad, grad, d).sqrt(), max=1.0)
        step = torch.where(running, step, torch.zeros_like(step))
        trial = [pi + _scale(di, step, d) for pi, di in zip(p, direction, strict=True)]
        f_trial, grad_trial = part.objective(*trial)
        for halvings in range(MAX_HALVINGS + 1):
            accepted = f_trial <= f + ARMIJO * step * slope
            failing = running & ~accepted
            if halvings == MAX_HALVINGS or not bool(failing.any()):
                break
            # backtrack: only the groups with a failing head are evaluated again
            step = torch.where(failing, step * 0.5, step)
            redo = torch.nonzero(failing.any(1)).squeeze(1)
            redone = [
                pi[redo] + _scale(di[redo], step[redo], d)
                for pi, di in zip(p, direction, strict=True)
            ]
            f_redo, grad_redo = part.subset(redo).objective(*redone)
            for t, r in zip(trial + grad_trial, redone + grad_redo, strict=True):
                t[redo] = r
            f_trial[redo] = f_redo
        moved = accepted & running
        mask = moved.double()
        s_new = [_scale(t - pi, mask, d) for t, pi in zip(trial, p, strict=True)]
        y_new = [_scale(gt - gi, mask, d) for gt, gi in zip(grad_trial, grad, strict=True)]
        p = [pi + si for pi, si in zip(p, s_new, strict=True)]
        grad = [gi + yi for gi, yi in zip(grad, y_new, strict=True)]
        f_old, f = f, torch.where(moved, f_trial, f)
        sy, yy = _dot(s_new, y_new, d), _dot(y_new, y_new, d)
        curved = moved & (sy > 1e-10 * yy) & (yy > 0)
        rho = torch.where(curved, 1.0 / torch.where(curved, sy, 1.0), 0.0)  # 0: pair unused
        gamma = torch.where(curved, sy / torch.where(curved, yy, 1.0), gamma)
        pairs = (pairs + [(s_new, y_new, rho)])[-HISTORY:]
        iters[live] = torch.where(running, it, iters[live])
        largest = torch.stack(
            [t.abs().view(t.shape[0], t.shape[1], d, -1).amax((1, 3)) for t in grad]
        ).amax(0)
        scale = torch.maximum(torch.maximum(f_old.abs(), f.abs()), torch.ones_like(f))
        done = largest <= GRADIENT_TOLERANCE
        done |= (f_old - f) <= RELATIVE_DECREASE * scale
        done |= ~accepted  # no step lowers the objective: as low as float32 can tell
        converged[live] |= done & running
        running &= ~done
        if it == max_iter or not bool(running.any()):
            for t, pi in zip(theta, p, strict=True):
                t[live] = pi
            break
        keep = running.any(1)
        if not bool(keep.all()):  # write finished groups back, drop them
            for t, pi in zip(theta, p, strict=True):
                t[live[~keep]] = pi[~keep]
            live, part = live[keep], part.subset(torch.nonzero(keep).squeeze(1))
            p, grad = [t[keep] for t in p], [t[keep] for t in grad]
            f, gamma, running = f[keep], gamma[keep], running[keep]
            pairs = [([t[keep] for t in s], [t[keep] for t in y], r[keep]) for s, y, r in pairs]
    return theta[0], theta[1], iters, converged


def fit(stacks, parts, ys, max_iter: int, decays: tuple[float, ...]) -> None:
    """Fit every linear head of `stacks` (probes.HeadStack, heads layer-major, then run,
    then decay) and leave the results where the early-stopping engines leave theirs:
    `best` (and `params`) the fitted weights, `best_loss` the validation loss,
    `best_epoch` and `epochs` the iterations, `active` the heads that hit `max_iter`."""
    d = len(decays)
    device = parts[TRAIN].device
    rows = parts[TRAIN][::d]  # [runs, n_train]: a run's decays share its rows
    n_runs = rows.shape[0]
    y = ys[TRAIN][::d]
    penalties = torch.tensor(decays, dtype=torch.float32, device=device)
    for stack in stacks:
        if len(stack.params) != 2:
            raise ValueError("the lbfgs solver fits linear heads (hidden: 0) only")
        n_heads, _, c = stack.params[0].shape
        iters = torch.zeros((n_heads // d, d), dtype=torch.int64, device=device)
        converged = torch.zeros_like(iters, dtype=torch.bool)
        for i, dim in enumerate(stack.dims):  # layer by layer: no padded columns
            heads = _Heads(stack.run_inputs(rows, d, i), y, penalties, c)
            at = slice(i * n_runs * d, (i + 1) * n_runs * d)  # the layer's heads
            # [runs * D, dim, C] -> [runs, dim, D*C]: a run's decays side by side
            w = stack.params[0][at, :dim].view(n_runs, d, dim, c).permute(0, 2, 1, 3)
            b = stack.params[1][at].reshape(n_runs, 1, d * c)
            w, b, layer_iters, layer_converged = minimise(
                heads, w.reshape(n_runs, dim, d * c), b.contiguous(), max_iter
            )
            groups = slice(i * n_runs, (i + 1) * n_runs)
            iters[groups], converged[groups] = layer_iters, layer_converged
            with torch.no_grad():
                fitted = w.view(n_runs, dim, d, c).permute(0, 2, 1, 3).reshape(-1, dim, c)
                for target in (stack.params, stack.best):
                    target[0][at, :dim] = fitted
                    target[1][at] = b.view(-1, 1, c)
        with torch.no_grad():
            stack.best_loss = stack.losses(VAL, ys[VAL])
            stack.best_epoch = iters.flatten()
            stack.epochs = iters.flatten()
            stack.active = ~converged.flatten()
