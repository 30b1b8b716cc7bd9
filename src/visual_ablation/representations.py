"""Image transforms that each remove one visual cue.

Every transform takes a float batch `x` in [0, 1], shape [N, 3, H, W], on any device, and
the global indices of its images (`index`, [N] int64); randomness is drawn per image from
(seed, index), so an image gets the same result whatever batch or device it is in.
Definitions follow the usual ablation literature (see config/README.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from visual_ablation.config import REPRESENTATION_DEFAULTS

LUMA = (0.299, 0.587, 0.114)


def _generator(seed: int, index: int) -> torch.Generator:
    # Distinct, reproducible stream per (seed, image); CPU generator so results do not
    # depend on the device's RNG implementation.
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + int(index)) % (2**63))


def luminance(x: torch.Tensor) -> torch.Tensor:
    """[N, 3, H, W] -> [N, 1, H, W] (ITU-R BT.601 weights)."""
    w = torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)


def gaussian_blur(x: torch.Tensor, sigma_px: float) -> torch.Tensor:
    """Separable Gaussian blur with reflect padding (a constant image stays constant)."""
    if sigma_px <= 0:
        return x
    radius = max(1, math.ceil(3 * sigma_px))
    radius = min(radius, x.shape[-1] - 1, x.shape[-2] - 1)
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-0.5 * (t / sigma_px) ** 2)
    kernel = kernel / kernel.sum()
    c = x.shape[1]
    kx = kernel.view(1, 1, 1, -1).repeat(c, 1, 1, 1)
    ky = kernel.view(1, 1, -1, 1).repeat(c, 1, 1, 1)
    y = F.pad(x, (radius, radius, 0, 0), mode="reflect")
    y = F.conv2d(y, kx, groups=c)
    y = F.pad(y, (0, 0, radius, radius), mode="reflect")
    return F.conv2d(y, ky, groups=c)


def original(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return x


def grayscale(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return luminance(x).expand(-1, 3, -1, -1).contiguous()


def lowpass(x: torch.Tensor, index: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur; `sigma` is a fraction of the image side, so it scales with size."""
    return gaussian_blur(x, sigma * x.shape[-1])


def highpass(x: torch.Tensor, index: torch.Tensor, sigma: float) -> torch.Tensor:
    """x - blur(x) + 0.5: fine texture and edges without the coarse layout."""
    return (x - gaussian_blur(x, sigma * x.shape[-1]) + 0.5).clamp(0.0, 1.0)


def phase_scramble(
    x: torch.Tensor, index: torch.Tensor, strength: float, seed: int
) -> torch.Tensor:
    """Keep each channel's amplitude spectrum, add one random phase field to all channels.

    The random phase is the phase of white noise's FFT (Hermitian, so the result is real)
    with the DC term left alone (so mean brightness is kept). Not clipped: clipping would
    change the amplitude spectrum this representation promises to keep.
    """
    n, _, h, w = x.shape
    noise = torch.stack([torch.rand(h, w, generator=_generator(seed, i)) for i in index.tolist()])
    noise_phase = torch.angle(torch.fft.fft2(noise.to(torch.float64))).to(x.device)
    noise_phase[:, 0, 0] = 0.0
    spectrum = torch.fft.fft2(x.to(torch.float64))
    phase = torch.angle(spectrum) + strength * noise_phase[:, None]
    out = torch.fft.ifft2(torch.abs(spectrum) * torch.exp(1j * phase)).real
    return out.to(x.dtype)


def _grid_cells(h: int, w: int, grid: int) -> tuple[int, int]:
    if h < grid or w < grid:
        raise ValueError(f"image {h}x{w} is smaller than the {grid}x{grid} grid")
    return h // grid, w // grid


def patch_shuffle(x: torch.Tensor, index: torch.Tensor, grid: int, seed: int) -> torch.Tensor:
    """Cut the image into grid x grid patches and permute them (one permutation per image).

    Pixels outside the largest divisible region (when the side is not a multiple of
    `grid`) stay in place, so the multiset of pixel values is always kept.
    """
    n, c, h, w = x.shape
    ph, pw = _grid_cells(h, w, grid)
    core = x[:, :, : ph * grid, : pw * grid]
    patches = core.reshape(n, c, grid, ph, grid, pw).permute(0, 2, 4, 1, 3, 5)
    patches = patches.reshape(n, grid * grid, c, ph, pw)
    perms = torch.stack(
        [torch.randperm(grid * grid, generator=_generator(seed, i)) for i in index.tolist()]
    ).to(x.device)
    shuffled = torch.gather(patches, 1, perms.view(n, -1, 1, 1, 1).expand_as(patches))
    shuffled = shuffled.reshape(n, grid, grid, c, ph, pw).permute(0, 3, 1, 4, 2, 5)
    out = x.clone()
    out[:, :, : ph * grid, : pw * grid] = shuffled.reshape(n, c, ph * grid, pw * grid)
    return out


def edges(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Sobel gradient magnitude of the luminance, scaled to [0, 1] per image (images whose
    strongest gradient is below 0.01 count as flat and stay near 0)."""
    lum = luminance(x)
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=x.dtype)
    kx = kx.to(x.device)
    kernels = torch.stack([kx, kx.T]).unsqueeze(1)
    grad = F.conv2d(F.pad(lum, (1, 1, 1, 1), mode="replicate"), kernels)
    mag = grad.pow(2).sum(dim=1, keepdim=True).sqrt()
    # floor: a flat image's rounding noise must not be stretched to full contrast
    peak = mag.amax(dim=(2, 3), keepdim=True).clamp_min(1e-2)
    return (mag / peak).expand(-1, 3, -1, -1).contiguous()


def occlusion(
    x: torch.Tensor, index: torch.Tensor, grid: int, fraction: float, fill: float, seed: int
) -> torch.Tensor:
    """Set round(fraction * grid^2) randomly chosen patches of a grid x grid to `fill`."""
    n, c, h, w = x.shape
    ph, pw = _grid_cells(h, w, grid)
    k = round(fraction * grid * grid)
    mask = torch.zeros(n, grid * grid, dtype=torch.bool)
    for row, i in enumerate(index.tolist()):
        mask[row, torch.randperm(grid * grid, generator=_generator(seed, i))[:k]] = True
    mask = mask.view(n, 1, grid, 1, grid, 1).expand(n, 1, grid, ph, grid, pw)
    mask = mask.reshape(n, 1, grid * ph, grid * pw).to(x.device)
    out = x.clone()
    core = out[:, :, : grid * ph, : grid * pw]
    core.masked_fill_(mask.expand_as(core), fill)
    return out


TRANSFORMS: dict[str, Callable[..., torch.Tensor]] = {
    "original": original,
    "grayscale": grayscale,
    "lowpass": lowpass,
    "highpass": highpass,
    "phase_scramble": phase_scramble,
    "patch_shuffle": patch_shuffle,
    "edges": edges,
    "occlusion": occlusion,
}
assert set(TRANSFORMS) == set(REPRESENTATION_DEFAULTS), "config defaults out of sync"


def build(
    kind: str, params: dict[str, Any]
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """A transform `f(x, index)` with its params bound."""
    fn = TRANSFORMS[kind]
    merged = {**REPRESENTATION_DEFAULTS[kind], **params}
    return lambda x, index: fn(x, index, **merged)
