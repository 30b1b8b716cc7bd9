"""Known answers for every representation."""

from __future__ import annotations

import pytest
import torch

from visual_ablation import representations as reps
from visual_ablation.config import REPRESENTATION_DEFAULTS


def images(n=4, size=32, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def apply(kind, x, start=0, **params):
    return reps.build(kind, params)(x, torch.arange(start, start + len(x)))


def test_every_configured_representation_is_implemented():
    assert set(reps.TRANSFORMS) == set(REPRESENTATION_DEFAULTS)


def test_original_is_identity():
    x = images()
    assert torch.equal(apply("original", x), x)


def test_grayscale_gives_equal_channels_with_luminance():
    x = images()
    y = apply("grayscale", x)
    assert torch.equal(y[:, 0], y[:, 1]) and torch.equal(y[:, 1], y[:, 2])
    expected = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    torch.testing.assert_close(y[:, 0], expected)


def test_lowpass_of_a_constant_image_is_that_image():
    x = torch.full((2, 3, 32, 32), 0.37)
    torch.testing.assert_close(apply("lowpass", x, sigma=0.1), x)


def test_lowpass_removes_high_frequencies():
    x = images()
    y = apply("lowpass", x, sigma=0.08)
    hi = lambda t: torch.abs(torch.fft.fft2(t))[..., 12:20, 12:20].sum()  # noqa: E731
    assert hi(y) < 0.05 * hi(x)
    torch.testing.assert_close(y.mean(dim=(2, 3)), x.mean(dim=(2, 3)), atol=0.02, rtol=0)


def test_highpass_of_a_constant_image_is_mid_grey():
    x = torch.full((1, 3, 16, 16), 0.8)
    torch.testing.assert_close(apply("highpass", x, sigma=0.1), torch.full_like(x, 0.5))


def test_phase_scramble_keeps_amplitude_spectrum_and_mean():
    x = images()
    y = apply("phase_scramble", x, strength=1.0, seed=3)
    amp = lambda t: torch.abs(torch.fft.fft2(t.double()))  # noqa: E731
    torch.testing.assert_close(amp(y), amp(x), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(y.mean(dim=(2, 3)), x.mean(dim=(2, 3)), atol=1e-5, rtol=0)
    assert (y - x).abs().mean() > 0.1  # the image itself did change


def test_phase_scramble_is_deterministic_per_image_whatever_the_batch():
    x = images(6)
    whole = apply("phase_scramble", x, seed=1)
    parts = torch.cat(
        [apply("phase_scramble", x[:2], 0, seed=1), apply("phase_scramble", x[2:], 2, seed=1)]
    )
    torch.testing.assert_close(whole, parts)
    assert not torch.allclose(whole, apply("phase_scramble", x, seed=2))


def test_patch_shuffle_keeps_the_multiset_of_pixels_and_moves_patches():
    x = images(3, 32)
    y = apply("patch_shuffle", x, grid=4, seed=0)
    for i in range(len(x)):
        for c in range(3):
            assert torch.equal(
                torch.sort(x[i, c].flatten()).values, torch.sort(y[i, c].flatten()).values
            )
    assert not torch.equal(x, y)
    # every 8x8 patch of y is some patch of x
    patches = lambda t: t.unfold(1, 8, 8).unfold(2, 8, 8).reshape(3, 16, 8, 8)  # noqa: E731
    px, py = patches(x[0]), patches(y[0])
    for k in range(16):
        assert any(torch.equal(py[:, k], px[:, j]) for j in range(16))


def test_patch_shuffle_with_indivisible_side_keeps_pixels():
    x = images(2, 30)
    y = apply("patch_shuffle", x, grid=4, seed=0)
    assert torch.equal(torch.sort(x.flatten()).values, torch.sort(y.flatten()).values)


def test_occlusion_zeros_about_half_of_the_patches():
    x = images(8, 32) * 0.9 + 0.05  # no pixel is exactly 0 before
    y = apply("occlusion", x, grid=4, fraction=0.5, fill=0.0, seed=0)
    zero = (y == 0).all(dim=1)
    assert zero.float().mean(dim=(1, 2)).tolist() == [0.5] * 8
    kept = ~zero
    assert torch.equal(y.permute(0, 2, 3, 1)[kept], x.permute(0, 2, 3, 1)[kept])
    masks = {tuple(z.flatten().tolist()) for z in zero}
    assert len(masks) > 1  # a different pattern per image


def test_edges_are_zero_on_flat_images_and_peak_on_a_step():
    flat = torch.full((1, 3, 16, 16), 0.4)
    assert apply("edges", flat).abs().max() < 1e-4  # float rounding only
    step = torch.zeros(1, 3, 16, 16)
    step[..., 8:] = 1.0
    y = apply("edges", step)
    assert y.max() == pytest.approx(1.0)
    assert y[0, 0, :, 7:9].min() > 0.9 and y[0, 0, :, :6].max() == 0


@pytest.mark.parametrize("kind", sorted(REPRESENTATION_DEFAULTS))
def test_every_representation_keeps_shape_and_dtype(kind):
    x = images(2, 24)
    y = apply(kind, x)
    assert y.shape == x.shape and y.dtype == x.dtype and torch.isfinite(y).all()
