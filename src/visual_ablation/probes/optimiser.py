"""AdamW over stacked heads, for the CPU's engine and (capturable) for CUDA's."""

from __future__ import annotations

import math

import torch


def decay_factors(
    params: list[torch.Tensor], lr: float, weight_decay: float | list[float | torch.Tensor]
) -> float | list[float | torch.Tensor]:
    """AdamW's decoupled decay as the factor each parameter is multiplied by, 1 - lr * wd:
    one number when every parameter shares it (torch's own arithmetic), else one per
    parameter (float32 tensors of the same values where a stack's heads differ)."""
    if not isinstance(weight_decay, list):
        return 1.0 - lr * weight_decay
    if len(weight_decay) != len(params):
        raise ValueError(f"{len(weight_decay)} weight decays for {len(params)} parameters")
    factors = []
    for p, wd in zip(params, weight_decay, strict=True):
        if isinstance(wd, torch.Tensor):
            wd = (1.0 - lr * wd.double()).to(p.dtype).to(p.device)
        else:
            wd = 1.0 - lr * wd
        factors.append(wd)
    return factors


class AdamW:
    """torch.optim.AdamW's update (decoupled weight decay, bias-corrected moments) over
    the parameters given a gradient, written out with torch's foreach ops.

    Why not torch.optim.AdamW: constructing it imports torch._dynamo (about 1.7 s here),
    more than the whole training of a small train job. tests/probes/test_probes.py checks this
    class step for step against torch.optim.AdamW. Like torch, each parameter counts its
    own steps (a stack whose heads have all stopped gets no gradient and takes no step);
    parameters are updated in groups of equal step count (in a train job, all live ones
    share one). A stopped head inside a live stack gets a zero gradient and drifts with
    its momentum: harmless, its best weights were copied aside when it stopped.
    `weight_decay`: one value, or one per parameter (a number, or a tensor that
    broadcasts against it: a stack's per-head decays, [heads, 1, 1]).
    """

    def __init__(
        self,
        params: list[torch.Tensor],
        lr: float,
        weight_decay: float | list[float | torch.Tensor],
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ):
        self.params = params
        self.lr, self.betas, self.eps = lr, betas, eps
        self.decay = decay_factors(params, lr, weight_decay)
        self.exp_avg = [torch.zeros_like(p) for p in params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in params]
        self.steps = [0] * len(params)

    @torch.no_grad()
    def step(self, grads: list[torch.Tensor | None]) -> None:
        """One step of the parameters whose gradient (in `params`' order) is not None."""
        live = [i for i, g in enumerate(grads) if g is not None]
        if not live:
            return
        for i in live:
            self.steps[i] += 1
        for step in sorted({self.steps[i] for i in live}):
            group = [i for i in live if self.steps[i] == step]
            self._update(group, [grads[i] for i in group], step)

    @torch.no_grad()
    def keep(self, heads: torch.Tensor) -> None:
        """Keep only these heads (indices along every parameter's first dimension): the
        parameters, moments and per-head decays of the others are dropped."""
        for state in (self.params, self.exp_avg, self.exp_avg_sq):
            state[:] = [t.index_select(0, heads) for t in state]
        if isinstance(self.decay, list):
            self.decay = [
                d.index_select(0, heads) if isinstance(d, torch.Tensor) and d.dim() else d
                for d in self.decay
            ]

    def _update(self, index: list[int], grads: list[torch.Tensor], step: int) -> None:
        beta1, beta2 = self.betas
        params = [self.params[i] for i in index]
        exp_avg = [self.exp_avg[i] for i in index]
        exp_avg_sq = [self.exp_avg_sq[i] for i in index]
        if isinstance(self.decay, list):
            torch._foreach_mul_(params, [self.decay[i] for i in index])
        else:
            torch._foreach_mul_(params, self.decay)
        torch._foreach_lerp_(exp_avg, grads, 1.0 - beta1)
        torch._foreach_mul_(exp_avg_sq, beta2)
        torch._foreach_addcmul_(exp_avg_sq, grads, grads, 1.0 - beta2)
        step_size = self.lr / (1.0 - beta1**step)
        # one tensor at a time: torch's foreach sqrt runs at half the speed on the CPU (a
        # square root is correctly rounded, so the numbers are the same)
        denom = [torch.sqrt(v) for v in exp_avg_sq]
        torch._foreach_div_(denom, math.sqrt(1.0 - beta2**step))
        torch._foreach_add_(denom, self.eps)
        torch._foreach_addcdiv_(params, exp_avg, denom, -step_size)


class DeviceAdamW(AdamW):
    """`AdamW`'s update for the static engine, with nothing read from the host: every
    parameter steps at every step (stopped heads get zero gradients), the step count is
    a tensor on the device, and the bias corrections of every step are looked up in a
    table made once, so a CUDA graph can capture the step. Each op is one multi-tensor
    kernel over every parameter (torch's capturable foreach AdamW does the same).

    Why not torch's fused kernel (`torch._fused_adamw_`): it orders the arithmetic
    differently, and a probe at a high learning rate amplifies that last-bit difference
    into visibly different heads (0.04 in a test probability); this class does `AdamW`'s
    ops in `AdamW`'s order, so on the CPU the two engines give identical numbers.
    tests/probes/test_probes.py checks it step for step against torch.optim.AdamW."""

    def __init__(
        self,
        params: list[torch.Tensor],
        lr: float,
        weight_decay: float | list[float | torch.Tensor],
        max_steps: int,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ):
        super().__init__(params, lr, weight_decay, betas, eps)
        device = params[0].device
        self.step_count = torch.zeros((), dtype=torch.int64, device=device)
        beta1, beta2 = betas
        # row k: step k+1's -lr / (1 - beta1^t) and sqrt(1 - beta2^t), as AdamW computes them
        table = [
            (-lr / (1.0 - beta1**t), math.sqrt(1.0 - beta2**t)) for t in range(1, max_steps + 1)
        ]
        self.table = torch.tensor(table, dtype=params[0].dtype, device=device)

    def state(self) -> list[torch.Tensor]:
        return [*self.params, *self.exp_avg, *self.exp_avg_sq, self.step_count]

    @torch.no_grad()
    def step(self, grads: list[torch.Tensor]) -> None:
        beta1, beta2 = self.betas
        # index_select, not table[step_count]: a tensor index would be read on the host
        step_size, correction2 = self.table.index_select(0, self.step_count.view(1))[0]
        self.step_count.add_(1)
        torch._foreach_mul_(self.params, self.decay)
        torch._foreach_lerp_(self.exp_avg, grads, 1.0 - beta1)
        torch._foreach_mul_(self.exp_avg_sq, beta2)
        torch._foreach_addcmul_(self.exp_avg_sq, grads, grads, 1.0 - beta2)
        denom = torch._foreach_sqrt(self.exp_avg_sq)
        torch._foreach_div_(denom, correction2)
        torch._foreach_add_(denom, self.eps)
        # AdamW's addcdiv(p, m, denom, value=-step_size): p + (value * m) / denom
        update = torch._foreach_mul(self.exp_avg, step_size)
        torch._foreach_div_(update, denom)
        torch._foreach_add_(self.params, update)
