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

Two changes of coordinates make it fast and leave the optimum where it is:
- **the span of the training rows**: the penalised optimum's W lies in it (the representer
  theorem; the unpenalised bias does not change that, since standardised train columns
  have mean 0), so each (layer, run)'s heads are fitted in an orthonormal basis V of that
  span (`span_basis`: a QR factorisation, rotated to the Gram matrix's eigenvectors)
  and W = V Z after. A layer
  wider than its training rows is fitted in n_train coordinates; ||V Z|| = ||Z||, so the
  objective is the same one.
- **a preconditioner**: in that basis the objective's curvature along basis direction i is
  about CURVATURE * e_i / n + weight_decay (e_i the Gram matrix's eigenvalue), a spread of
  several decades for weak penalties; L-BFGS's initial inverse Hessian is the inverse of
  that diagonal (scaled each iteration by the last curvature pair), not a multiple of the
  identity.

Every head runs its own L-BFGS (its own curvature pairs, step and stopping test) on a
head-major layout, so that every vector operation is one kernel over all live heads; a head
that has converged leaves the arithmetic. The heads of one (layer, run) differ only in their
weight decay and share its inputs: their logits are one matmul, side by side.
benchmarks/linear_fit.py times it against scikit-learn (benchmarks/README.md).
"""

from __future__ import annotations

import torch

from visual_ablation.data.splits import TRAIN, VAL
from visual_ablation.probes.stacking import stack_groups

HISTORY = 10  # curvature pairs kept (scipy's L-BFGS-B default)
GRADIENT_TOLERANCE = 1e-4  # largest |gradient| entry at convergence (scikit-learn's tol)
# stop when an iteration lowers the objective by less than this, relative: float32
# logits make smaller changes noise
RELATIVE_DECREASE = 1e-9
ARMIJO = 1e-4  # sufficient decrease of the backtracking line search
MAX_HALVINGS = 30
# the softmax cross-entropy's curvature per unit of squared input, as the preconditioner
# assumes it: at most 1/C at uniform probabilities over C classes, less as the fit grows
# confident. Only the speed depends on it: the value that took the fewest iterations on
# the default experiment's stores (benchmarks/linear_fit.py)
CURVATURE = 0.01


def span_basis(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """An orthonormal basis of the span of each group's rows, x [groups, n, d], in which
    their Gram matrix is diagonal: (the rows in it [groups, n, r], the basis [groups, d,
    r], each basis direction's Gram eigenvalue [groups, r]), r = min(n, d). Orthogonal
    factorisations only (QR, eigh), so the basis is orthonormal to float32's precision
    however ill-conditioned the rows: no direction is dropped or divided by its size (the
    weakly penalised optimum of features that separate the classes uses the small ones)."""
    n, d = x.shape[1:]
    if n < d:  # x^T = Q R: the span's basis Q [d, n], the rows in it R^T [n, n]
        basis, r = torch.linalg.qr(x.transpose(1, 2))
        coords = r.transpose(1, 2)
    else:
        basis, coords = None, x
    # rotated within the span so that the Gram matrix is diagonal: the preconditioner's
    eigenvalues, rotation = torch.linalg.eigh(coords.transpose(1, 2) @ coords)
    basis = rotation if basis is None else basis @ rotation
    return coords @ rotation, basis, eigenvalues.clamp_min(0.0)


class _Heads:
    """G groups (a (layer, run) each: its train rows in span coordinates, with a column of
    ones for the bias, x [G, n, R + 1]) x D weight decays: head h is group h // D with
    decay h % D, its parameters one [R + 1, C] block (W's rows, then the bias's)."""

    def __init__(self, x, y, eigenvalues, decays: torch.Tensor, n_classes: int):
        self.x, self.y = x, y  # [G, n, R + 1], [G, n]
        self.decays = decays  # [D], float32
        self.n_classes = n_classes
        n = x.shape[1]
        # each head's diagonal inverse curvature [H, R + 1, 1]: the bias's curvature is
        # CURVATURE (its column of ones has eigenvalue n)
        curvature = CURVATURE * eigenvalues / n  # [G, R]
        curvature = torch.cat([curvature, torch.full_like(curvature[:, :1], CURVATURE)], 1)
        penalty = torch.cat(
            [decays.view(-1, 1).expand(-1, x.shape[2] - 1), decays.new_zeros(len(decays), 1)], 1
        )
        self.preconditioner = (1.0 / (curvature.unsqueeze(1) + penalty)).flatten(0, 1).unsqueeze(2)
        self._inputs = (torch.arange(x.shape[0], device=x.device), x)  # (groups, their x)

    def inputs(self, groups: torch.Tensor, keep: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """x of some groups (sorted), and each group's position in it. `keep`: the live
        heads' groups, gathered once each time they change; else (the line search's few
        heads) the kept inputs where they hold those groups (the others' heads are zero
        columns), or those groups gathered."""
        kept, x = self._inputs
        if torch.equal(kept, groups):
            return x, torch.arange(len(groups), device=groups.device)
        if not keep and len(groups) * 2 >= len(kept):
            positions = torch.searchsorted(kept, groups).clamp_(max=len(kept) - 1)
            if torch.equal(kept[positions], groups):
                return x, positions
        x = self.x.index_select(0, groups)
        if keep:
            self._inputs = (groups, x)
        return x, torch.arange(len(groups), device=groups.device)

    def objective(self, heads: torch.Tensor, theta: torch.Tensor, keep: bool = True):
        """The objective [L] (float64) and gradient [L, R + 1, C] of some heads (sorted),
        theta [L, R + 1, C]. `keep`: see `inputs`."""
        d, c = len(self.decays), self.n_classes
        groups, counts = torch.unique_consecutive(
            torch.div(heads, d, rounding_mode="floor"), return_counts=True
        )
        x, positions = self.inputs(groups, keep)
        local = torch.repeat_interleave(positions, counts)  # each head's group in x
        first = torch.cumsum(counts, 0) - counts
        slot = torch.arange(len(heads), device=heads.device) - torch.repeat_interleave(
            first, counts
        )
        k = int(counts.max())
        g, n, width = x.shape
        # the heads' blocks side by side per group: [g, R + 1, k * C] (absent heads zero)
        w = theta.new_zeros((g, k, width, c))
        w[local, slot] = theta
        logits = torch.bmm(x, w.permute(0, 2, 1, 3).reshape(g, width, k * c)).view(g, n, k, c)
        groups_y = self.y.index_select(0, groups)
        if g != len(groups):  # kept inputs: the labels in their places
            groups_y = self.y.new_zeros((g, n)).index_copy_(0, positions, groups_y)
        labels = groups_y.view(g, n, 1, 1).expand(g, n, k, 1)
        # cross-entropy and its gradient to full relative precision where a head is
        # confident (weak penalties on separable features): with the top logit subtracted,
        # -log p_y = (top - logit_y) + log1p(sum of the others' exp), and 1 - p_y is the
        # others' share; the sums that hold 1 + something small are float64. In float32,
        # log(1 + 1e-8) is 0, and the line search could not tell the last steps apart
        logits -= logits.amax(3, keepdim=True)
        grad = logits.exp()  # the numerators, the top one exactly 1
        total = grad.sum(3, keepdim=True, dtype=torch.float64)
        others = total - grad.gather(3, labels).double()
        ce = torch.log1p(total - 1.0) - logits.gather(3, labels).double()
        ce = ce.squeeze(3).sum(1) / n  # [g, k]
        grad /= total.float()  # the probabilities
        grad.scatter_(3, labels, (-others / total).float())  # p_y - 1 = -(the others' share)
        grad = torch.bmm(x.transpose(1, 2), grad.div_(n).view(g, n, k * c))
        grad = grad.view(g, width, k, c)[local, :, slot]  # [L, R + 1, C]
        decay = self.decays[heads % d].view(-1, 1, 1)
        weights = theta[:, :-1]
        grad[:, :-1] += decay * weights
        penalty = 0.5 * decay.view(-1).double() * weights.square().sum((1, 2), dtype=torch.float64)
        return ce[local, slot] + penalty, grad


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-head inner products of [L, rows, C] blocks: [L], float64."""
    return (a * b).sum((1, 2), dtype=torch.float64)


def _times(v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """v [L, rows, C] with each head's block times its scalar t [L]."""
    return v * t.to(v.dtype).view(-1, 1, 1)


def minimise(heads: _Heads, max_iter: int):
    """Run each head's L-BFGS from zero to convergence or `max_iter` iterations; returns
    (theta [H, R + 1, C], iterations [H], converged [H])."""
    x = heads.x
    n_heads = x.shape[0] * len(heads.decays)
    theta = x.new_zeros((n_heads, x.shape[2], heads.n_classes))
    iters = torch.zeros(n_heads, dtype=torch.int64, device=x.device)
    converged = torch.zeros(n_heads, dtype=torch.bool, device=x.device)
    live = torch.arange(n_heads, device=x.device)  # heads still running
    p, preconditioner = theta.clone(), heads.preconditioner
    f, grad = heads.objective(live, p)
    pairs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    gamma = torch.ones_like(f)
    # finished heads stay in the arithmetic, not moving, until an eighth of them have
    # finished: then they leave (dropping a head copies all of its curvature pairs)
    frozen = torch.zeros_like(f, dtype=torch.bool)
    for it in range(1, max_iter + 1):
        # the two-loop recursion: direction = -H grad, H from the last HISTORY pairs and
        # the scaled preconditioner
        q = grad.clone()
        alphas = []
        for s, y, rho in reversed(pairs):
            a = rho * _dot(s, q)
            alphas.append(a)
            q -= _times(y, a)
        r = _times(q * preconditioner, gamma)
        for (s, y, rho), a in zip(pairs, reversed(alphas), strict=True):
            r += _times(s, a - rho * _dot(y, r))
        direction = r.neg_().masked_fill_(frozen.view(-1, 1, 1), 0.0)
        slope = _dot(grad, direction)
        uphill = (slope >= 0) & ~frozen  # lost curvature: preconditioned steepest descent
        if bool(uphill.any()):
            steepest = -grad * preconditioner
            direction = torch.where(uphill.view(-1, 1, 1), steepest, direction)
            slope = torch.where(uphill, _dot(grad, steepest), slope)
        step = torch.ones_like(f)
        trial = p + direction
        f_trial, grad_trial = heads.objective(live, trial)
        for halvings in range(MAX_HALVINGS + 1):
            accepted = (f_trial <= f + ARMIJO * step * slope) | frozen
            if halvings == MAX_HALVINGS or bool(accepted.all()):
                break
            # backtrack: only the failing heads are evaluated again
            redo = torch.nonzero(~accepted).squeeze(1)
            step[redo] *= 0.5
            redone = p[redo] + _times(direction[redo], step[redo])
            f_trial[redo], grad_trial[redo] = heads.objective(live[redo], redone, keep=False)
            trial[redo] = redone
        mask = (accepted & ~frozen).double()
        s_new = _times(trial - p, mask)
        y_new = _times(grad_trial - grad, mask)
        p += s_new
        grad += y_new
        f_old, f = f, torch.where(accepted & ~frozen, f_trial, f)
        sy, yy = _dot(s_new, y_new), _dot(y_new, y_new * preconditioner)
        curved = accepted & (sy > 1e-10 * yy) & (yy > 0)
        rho = torch.where(curved, 1.0 / torch.where(curved, sy, 1.0), 0.0)  # 0: pair unused
        gamma = torch.where(curved, sy / torch.where(curved, yy, 1.0), gamma)
        pairs = (pairs + [(s_new, y_new, rho)])[-HISTORY:]
        iters[live[~frozen]] = it
        largest = grad.abs().amax((1, 2))
        scale = torch.maximum(torch.maximum(f_old.abs(), f.abs()), torch.ones_like(f))
        done = largest <= GRADIENT_TOLERANCE
        done |= (f_old - f) <= RELATIVE_DECREASE * scale
        done |= ~accepted  # no step lowers the objective: as low as float32 can tell
        done |= frozen
        converged[live] = done
        if it == max_iter or bool(done.all()):
            theta[live] = p
            break
        frozen = done
        if int(frozen.sum()) * 8 >= len(frozen):  # write finished heads back, drop them
            theta[live[frozen]] = p[frozen]
            keep = torch.nonzero(~frozen).squeeze(1)
            live, p, grad, f, gamma = live[keep], p[keep], grad[keep], f[keep], gamma[keep]
            preconditioner, frozen = preconditioner[keep], frozen[keep]
            pairs = [(s[keep], y[keep], r[keep]) for s, y, r in pairs]
    return theta, iters, converged


def fit(stacks, parts, ys, max_iter: int, decays: tuple[float, ...]) -> None:
    """Fit every linear head of `stacks` (probes.HeadStack, heads layer-major, then run,
    then decay) and leave the results where the early-stopping engines leave theirs:
    `best` (and `params`) the fitted weights, `best_loss` the validation loss,
    `best_epoch` and `epochs` the iterations, `active` the heads that hit `max_iter`.
    Layers of similar span width are fitted together (`stack_groups`)."""
    d = len(decays)
    device = parts[TRAIN].device
    rows = parts[TRAIN][::d]  # [runs, n_train]: a run's decays share its rows
    n_runs, n_train = rows.shape
    y = ys[TRAIN][::d]
    penalties = torch.tensor(decays, dtype=torch.float32, device=device)
    spans = {}  # (stack, layer index) -> span_basis of its runs' train rows
    for s, stack in enumerate(stacks):
        if len(stack.params) != 2:
            raise ValueError("the lbfgs solver fits linear heads (hidden: 0) only")
        for i in range(len(stack.dims)):
            spans[s, i] = span_basis(stack.run_inputs(rows, d, i))
        stack.epochs = torch.zeros(len(stack.active), dtype=torch.int64, device=device)
        stack.active = torch.zeros_like(stack.active)
    for group in stack_groups({key: span[0].shape[2] for key, span in spans.items()}):
        width = max(spans[key][0].shape[2] for key in group)
        x = torch.cat(
            [
                torch.nn.functional.pad(spans[key][0], (0, width - spans[key][0].shape[2]))
                for key in group
            ]
        )
        x = torch.cat([x, x.new_ones((*x.shape[:2], 1))], 2)  # the bias's column
        eigenvalues = torch.cat(
            [
                torch.nn.functional.pad(spans[key][2], (0, width - spans[key][2].shape[1]))
                for key in group
            ]
        )
        heads = _Heads(
            x, y.repeat(len(group), 1), eigenvalues, penalties, stacks[0].params[0].shape[2]
        )
        theta, iters, converged = minimise(heads, max_iter)
        per_layer = n_runs * d
        for j, (s, i) in enumerate(group):
            stack, (_, basis, _) = stacks[s], spans[s, i]
            mine = slice(j * per_layer, (j + 1) * per_layer)
            block = theta[mine].view(n_runs, d, width + 1, -1)  # [runs, D, R + 1, C]
            r, c = basis.shape[2], block.shape[3]
            # W = V Z per (run, decay): [runs, dim, r] @ [runs, r, D * C]
            z = block[:, :, :r].permute(0, 2, 1, 3).reshape(n_runs, r, d * c)
            weights = torch.bmm(basis, z).view(n_runs, -1, d, c).permute(0, 2, 1, 3)
            at = slice(i * per_layer, (i + 1) * per_layer)  # the layer's heads in its stack
            dim = stack.dims[i]
            with torch.no_grad():
                for target in (stack.params, stack.best):
                    target[0][at] = 0.0
                    target[0][at, :dim] = weights.reshape(per_layer, dim, c)
                    target[1][at] = block[:, :, width].reshape(per_layer, 1, -1)
            stack.epochs[at] = iters[mine]
            stack.active[at] = ~converged[mine]
    for stack in stacks:
        with torch.no_grad():
            stack.best_loss, stack.best_accuracy = stack.scores(VAL, ys[VAL])
            stack.best_epoch = stack.epochs.clone()
