"""Image transforms that each remove one visual cue.

Every transform takes a float batch `x` in [0, 1], shape [N, 3, H, W], on any device, and
the global indices of its images (`index`, [N] int64); randomness is drawn per image from
(seed, index), so an image gets the same result whatever batch or device it is in.
Definitions follow the usual ablation literature (see config/README.md).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from visual_ablation.vocabulary import REPRESENTATION_DEFAULTS

LUMA = (0.299, 0.587, 0.114)


def _generator(stream: str, seed: int, index: int) -> torch.Generator:
    """A reproducible random stream per (representation, seed, image). The representation's
    name is part of it, so that two transforms with the same seed (patch_shuffle and
    occlusion) draw independently. A CPU generator: results do not depend on the device's
    RNG implementation."""
    digest = hashlib.sha256(f"{stream}/{int(seed)}/{int(index)}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


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


def _self_conjugate(h: int, w: int) -> torch.Tensor:
    """[h, w] mask of the FFT bins equal to their own mirror (-k = k mod size): DC and,
    for even sides, the Nyquist rows and columns' meeting points. A real image's spectrum
    is real there, so a random phase must be 0 there to keep the result real."""
    rows = torch.zeros(h, dtype=torch.bool)
    cols = torch.zeros(w, dtype=torch.bool)
    rows[0] = cols[0] = True
    if h % 2 == 0:
        rows[h // 2] = True
    if w % 2 == 0:
        cols[w // 2] = True
    return rows[:, None] & cols[None, :]


def phase_scramble(
    x: torch.Tensor, index: torch.Tensor, strength: float, seed: int
) -> torch.Tensor:
    """Keep each channel's amplitude spectrum, add `strength` times one random phase field
    to all channels (Geirhos et al. 2018's phase noise; Oppenheim & Lim 1981).

    The random phase is the phase of white noise's FFT, odd-symmetric (phase(-k) =
    -phase(k)), with the self-conjugate bins (DC, Nyquist) set to 0. Any multiple of it
    is then still odd-symmetric, so the scrambled spectrum stays Hermitian and its inverse
    is real for every strength (not only 1), and DC (mean brightness) is kept. Not clipped:
    clipping would change the amplitude spectrum this representation promises to keep.
    """
    n, _, h, w = x.shape
    noise = torch.stack(
        [torch.rand(h, w, generator=_generator("phase_scramble", seed, i)) for i in index.tolist()]
    )
    noise_phase = torch.angle(torch.fft.fft2(noise.to(torch.float64)))
    noise_phase[:, _self_conjugate(h, w)] = 0.0
    spectrum = torch.fft.fft2(x.to(torch.float64))
    phase = torch.angle(spectrum) + strength * noise_phase.to(x.device)[:, None]
    out = torch.fft.ifft2(torch.abs(spectrum) * torch.exp(1j * phase))
    return out.real.to(x.dtype)


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
        [
            torch.randperm(grid * grid, generator=_generator("patch_shuffle", seed, i))
            for i in index.tolist()
        ]
    ).to(x.device)
    shuffled = torch.gather(patches, 1, perms.view(n, -1, 1, 1, 1).expand_as(patches))
    shuffled = shuffled.reshape(n, grid, grid, c, ph, pw).permute(0, 3, 1, 4, 2, 5)
    out = x.clone()
    out[:, :, : ph * grid, : pw * grid] = shuffled.reshape(n, c, ph * grid, pw * grid)
    return out


def _sobel(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """scipy.ndimage.sobel along rows and along columns (edge pixels repeated): [N, 1, H, W]
    -> (d/di, d/dj), unnormalised like scipy's."""
    p = F.pad(x, (1, 1, 1, 1), mode="replicate")
    down, up = p[..., 2:, :], p[..., :-2, :]
    di = down - up  # [N, 1, H, W + 2]: central difference along rows
    di = di[..., :-2] + 2 * di[..., 1:-1] + di[..., 2:]
    right, left = p[..., :, 2:], p[..., :, :-2]
    dj = right - left  # [N, 1, H + 2, W]
    dj = dj[..., :-2, :] + 2 * dj[..., 1:-1, :] + dj[..., 2:, :]
    return di, dj


def _smooth_for_canny(x: torch.Tensor, sigma_px: float) -> torch.Tensor:
    """Gaussian smoothing as scikit-image's canny does it: zero padding, kernel truncated
    at 4 sigma, then divided by the smoothed all-ones image, so borders are not darkened."""
    if sigma_px <= 0:
        return x
    radius = int(4.0 * sigma_px + 0.5)
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-0.5 * (t / sigma_px) ** 2)
    kernel = kernel / kernel.sum()

    def blur(y: torch.Tensor) -> torch.Tensor:
        y = F.conv2d(y, kernel.view(1, 1, 1, -1), padding=(0, radius))
        return F.conv2d(y, kernel.view(1, 1, -1, 1), padding=(radius, 0))

    return blur(x) / (blur(torch.ones_like(x[:1])) + torch.finfo(x.dtype).eps)


def _local_maxima(di: torch.Tensor, dj: torch.Tensor, mag: torch.Tensor) -> torch.Tensor:
    """Non-maximum suppression along the gradient, interpolating between the two nearest
    neighbours in each of four direction sectors (scikit-image's bilinear scheme)."""
    h, w = mag.shape[-2:]
    padded = F.pad(mag, (1, 1, 1, 1))

    def at(oi: int, oj: int) -> torch.Tensor:  # magnitude of the neighbour (i + oi, j + oj)
        return padded[..., 1 + oi : 1 + oi + h, 1 + oj : 1 + oj + w]

    ai, aj = di.abs(), dj.abs()
    same_sign = ((di >= 0) & (dj >= 0)) | ((di <= 0) & (dj <= 0))
    opposite = ((di <= 0) & (dj >= 0)) | ((di >= 0) & (dj <= 0))
    mostly_i, mostly_j = ai >= aj, ai <= aj
    w_ji = torch.where(ai > 0, aj / ai.clamp_min(1e-30), torch.zeros_like(ai))
    w_ij = torch.where(aj > 0, ai / aj.clamp_min(1e-30), torch.zeros_like(aj))

    def peak(weight, plus_a, plus_b, minus_a, minus_b) -> torch.Tensor:
        plus = at(*plus_b) * weight + at(*plus_a) * (1 - weight)
        minus = at(*minus_b) * weight + at(*minus_a) * (1 - weight)
        return (plus <= mag) & (minus <= mag)

    # (sector, its test); a pixel on a sector boundary takes the later sector's test
    sectors = [
        (same_sign & mostly_i, peak(w_ji, (1, 0), (1, 1), (-1, 0), (-1, -1))),
        (same_sign & mostly_j, peak(w_ij, (0, 1), (1, 1), (0, -1), (-1, -1))),
        (opposite & mostly_j, peak(w_ij, (0, 1), (-1, 1), (0, -1), (1, -1))),
        (opposite & mostly_i, peak(w_ji, (-1, 0), (-1, 1), (1, 0), (1, -1))),
    ]
    local = torch.zeros_like(mag, dtype=torch.bool)
    for in_sector, is_peak in sectors:
        local = torch.where(in_sector, is_peak, local)
    return local


def _quantile(values: torch.Tensor, q: float) -> torch.Tensor:
    """Per-row q-quantile of [N, L] with linear interpolation (numpy's default); by
    sorting, since torch.quantile refuses inputs of more than 2^24 values."""
    ordered = values.sort(dim=1).values
    position = q * (values.shape[1] - 1)
    below = math.floor(position)
    above = min(below + 1, values.shape[1] - 1)
    fraction = position - below
    return ordered[:, below] + fraction * (ordered[:, above] - ordered[:, below])


def canny_edges(
    lum: torch.Tensor, sigma_px: float, high: float, low: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Canny (1986) edge map of a luminance batch [N, 1, H, W] -> (bool edges, low and
    high thresholds per image [N]).

    Smoothing, Sobel gradients, non-maximum suppression and 8-connected hysteresis follow
    scikit-image's `feature.canny` (tests/features/test_representations.py checks the maps against
    it); the thresholds follow MATLAB's `edge(I, 'canny')`, which Geirhos et al. (2019)
    used: the high threshold leaves the fraction `high` of each image's pixels below it
    (MATLAB's PercentOfPixelsNotEdges, 0.7), the low one is `low` times the high one
    (its ThresholdRatio, 0.4). Pixels on the image border are never edges.
    """
    n = lum.shape[0]
    di, dj = _sobel(_smooth_for_canny(lum, sigma_px))
    mag = torch.sqrt(di * di + dj * dj)
    flat = mag.flatten(1)
    # a flat image has no edges: the threshold never drops below 1/64 of the image's
    # strongest gradient (MATLAB's histogram resolution) nor below float rounding noise
    high_t = _quantile(flat, high)
    high_t = torch.maximum(high_t, flat.amax(dim=1) / 64).clamp_min(1e-4)
    low_t = low * high_t
    border = torch.zeros_like(mag, dtype=torch.bool)
    border[..., 1:-1, 1:-1] = True
    weak = border & _local_maxima(di, dj, mag) & (mag >= low_t.view(n, 1, 1, 1))
    edges = weak & (mag >= high_t.view(n, 1, 1, 1))
    # hysteresis: grow the strong edges through 8-connected weak ones until nothing changes
    while True:
        grown = edges
        for _ in range(4):  # a few steps between checks: fewer host synchronisations
            grown = weak & _dilate(grown)
        if torch.equal(grown, edges):
            return edges, low_t, high_t
        edges = grown


def _dilate(mask: torch.Tensor) -> torch.Tensor:
    """3x3 binary dilation of a bool [N, 1, H, W] (ORs of shifts: cheaper than max-pooling
    on the CPU)."""
    h, w = mask.shape[-2:]
    p = F.pad(mask, (1, 1, 1, 1))
    rows = p[..., :-2, :] | p[..., 1:-1, :] | p[..., 2:, :]
    return rows[..., :, :-2] | rows[..., :, 1:-1] | rows[..., :, 2:]


def edges(
    x: torch.Tensor,
    index: torch.Tensor,
    method: str,
    sigma: float,
    high: float,
    low: float,
) -> torch.Tensor:
    """Contours without colour or texture shading. `canny` (default): binary Canny edges
    of the luminance drawn black on white, as Geirhos et al.'s (2019) edge stimuli; the
    Gaussian's `sigma` is a fraction of the image side, as lowpass's (benchmarks/edges.py
    scores the defaults against the shapes' true contours).
    `sobel`: the Sobel gradient magnitude of the luminance, white on black, scaled to
    [0, 1] per image (graded: it keeps contrast and texture edges; images whose strongest
    gradient is below 0.01 count as flat and stay near 0)."""
    lum = luminance(x)
    if method == "canny":
        contours, _, _ = canny_edges(lum, sigma * x.shape[-1], high, low)
        return (1.0 - contours.to(x.dtype)).expand(-1, 3, -1, -1).contiguous()
    di, dj = _sobel(lum)
    mag = torch.sqrt(di * di + dj * dj)
    # floor: a flat image's rounding noise must not be stretched to full contrast
    peak = mag.amax(dim=(2, 3), keepdim=True).clamp_min(1e-2)
    return (mag / peak).expand(-1, 3, -1, -1).contiguous()


def occlusion(
    x: torch.Tensor, index: torch.Tensor, grid: int, fraction: float, fill: float, seed: int
) -> torch.Tensor:
    """Set round(fraction * grid^2) randomly chosen patches of a grid x grid to `fill`,
    mid grey (0.5) by default as in Zeiler & Fergus (2014) and Cutout (DeVries & Taylor
    2017): black patches would add strong artificial edges. Patches are drawn from the
    image's own random stream, independent of patch_shuffle's."""
    n, c, h, w = x.shape
    ph, pw = _grid_cells(h, w, grid)
    k = round(fraction * grid * grid)
    mask = torch.zeros(n, grid * grid, dtype=torch.bool)
    for row, i in enumerate(index.tolist()):
        order = torch.randperm(grid * grid, generator=_generator("occlusion", seed, i))
        mask[row, order[:k]] = True
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
