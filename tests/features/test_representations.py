"""Known answers for every representation."""

from __future__ import annotations

import pytest
import torch

from visual_ablation.features import representations as reps
from visual_ablation.plan.config import REPRESENTATION_DEFAULTS


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


def test_occlusion_greys_half_of_the_patches_by_default():
    x = images(8, 32) * 0.4  # no pixel is mid grey before
    y = apply("occlusion", x, seed=0)
    grey = (y == 0.5).all(dim=1)
    assert grey.float().mean(dim=(1, 2)).tolist() == [0.5] * 8
    kept = ~grey
    assert torch.equal(y.permute(0, 2, 3, 1)[kept], x.permute(0, 2, 3, 1)[kept])
    masks = {tuple(z.flatten().tolist()) for z in grey}
    assert len(masks) > 1  # a different pattern per image
    black = apply("occlusion", x, fill=0.0, seed=0)
    assert torch.equal(black == 0, (y == 0.5))  # fill changes the value, not the patches


def test_occlusion_and_patch_shuffle_draw_independent_patches():
    """With the same seed, occlusion's patches must not be the first entries of
    patch_shuffle's permutation (they once shared one random stream)."""
    n, grid = 200, 4
    x = torch.arange(grid * grid, dtype=torch.float32).view(1, 1, grid, grid)
    x = x.repeat_interleave(8, 2).repeat_interleave(8, 3).expand(n, 3, -1, -1) / 100 + 0.6
    shuffled = apply("patch_shuffle", x, grid=grid, seed=0)[:, 0, ::8, ::8].flatten(1)
    occluded = apply("occlusion", x, grid=grid, seed=0)[:, 0, ::8, ::8].flatten(1) == 0.5
    moved_first = ((shuffled[:, :8] - 0.6) * 100).round().long()  # patches moved to 0..7
    same = [
        set(moved_first[i].tolist()) == set(torch.nonzero(occluded[i]).flatten().tolist())
        for i in range(n)
    ]
    assert sum(same) == 0
    # and each patch is occluded about half the time over images
    rate = occluded.float().mean(0)
    assert rate.min() > 0.35 and rate.max() < 0.65


def test_phase_scramble_keeps_the_amplitude_spectrum_at_every_strength():
    """Partial scrambling must keep the spectrum Hermitian: taking the real part of a
    non-Hermitian inverse FFT would change the amplitudes (at the Nyquist bins first)."""
    amp = lambda t: torch.abs(torch.fft.fft2(t.double()))  # noqa: E731
    for size in (32, 31):  # even sides have Nyquist rows and columns, odd ones do not
        x = images(3, size)
        for strength in (0.25, 0.5, 1.0):
            y = apply("phase_scramble", x, strength=strength, seed=5)
            torch.testing.assert_close(amp(y), amp(x), atol=1e-4, rtol=1e-4)
    half = apply("phase_scramble", images(3), strength=0.5, seed=5)
    full = apply("phase_scramble", images(3), strength=1.0, seed=5)
    assert 0.02 < (half - images(3)).abs().mean() < (full - images(3)).abs().mean()


def square(size=32, lo=8, hi=24, value=0.8):
    x = torch.full((1, 3, size, size), 0.2)
    x[..., lo:hi, lo:hi] = value
    return x


def test_canny_edges_are_thin_black_contours_on_white():
    flat = torch.full((2, 3, 24, 24), 0.4)
    assert torch.equal(apply("edges", flat), torch.ones_like(flat))  # no edge at all
    # a square whose border pixels are half-way (its outline centred on pixels 7 and 24):
    # a hard step between two pixels would tie their gradients, and which of the two
    # non-maximum suppression keeps then hinges on the CPU's rounding (issue 30)
    x = torch.full((1, 3, 32, 32), 0.2)
    x[..., 7:25, 7:25] = 0.5
    x[..., 8:24, 8:24] = 0.8
    y = apply("edges", x)
    assert set(y.unique().tolist()) == {0.0, 1.0}  # binary
    assert torch.equal(y[:, 0], y[:, 1]) and torch.equal(y[:, 1], y[:, 2])
    edge = y[0, 0] == 0
    # the outline, one pixel thick, on the border pixels: nothing inside or outside
    for k in range(10, 22):
        assert edge[k].nonzero().ravel().tolist() == [7, 24], k
        assert edge[:, k].nonzero().ravel().tolist() == [7, 24], k
    assert not edge[9:23, 9:23].any() and not edge[:5].any() and not edge[27:].any()


def test_canny_ignores_a_texture_weaker_than_the_contour():
    """A stripe texture inside a high-contrast square: the contour is kept, the faint
    stripes (which the Sobel magnitude keeps, graded) are not."""
    x = square(value=0.9)
    x[..., 8:24, 8:24] -= 0.04 * (torch.arange(16) % 4 < 2).float().view(1, 16)
    contour = apply("edges", x)[0, 0] == 0
    assert not contour[11:21, 11:21].any()
    sobel = apply("edges", x, method="sobel")[0, 0]
    assert sobel[11:21, 11:21].max() > 0.05  # graded: the texture is still there


def test_canny_matches_scikit_image_on_real_images():
    """Same thresholds, same edge map as scikit-image's reference implementation, on the
    shapes generator and on real photos (the 20 ImageNet photos, at 96 px)."""
    import numpy as np
    from skimage.feature import canny

    from visual_ablation.data import procedural, reference_photos

    shapes = np.concatenate(list(procedural.ShapesSource(24, seed=0).decode(np.arange(24), 64)))
    photos, _ = reference_photos.photos(96)
    for batch in (shapes, photos):
        lum = reps.luminance(torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 255)
        ours, low, high = reps.canny_edges(lum, sigma_px=1.414, high=0.7, low=0.4)
        for i in range(len(batch)):
            reference = canny(
                lum[i, 0].double().numpy(),
                sigma=1.414,
                low_threshold=float(low[i]),
                high_threshold=float(high[i]),
            )
            assert reference.any()
            assert (ours[i, 0].numpy() != reference).mean() < 1e-3, i


def test_sobel_edges_are_zero_on_flat_images_and_peak_on_a_step():
    flat = torch.full((1, 3, 16, 16), 0.4)
    assert apply("edges", flat, method="sobel").abs().max() < 1e-4  # float rounding only
    step = torch.zeros(1, 3, 16, 16)
    step[..., 8:] = 1.0
    y = apply("edges", step, method="sobel")
    assert y.max() == pytest.approx(1.0)
    assert y[0, 0, :, 7:9].min() > 0.9 and y[0, 0, :, :6].max() == 0


@pytest.mark.parametrize("kind", sorted(REPRESENTATION_DEFAULTS))
def test_every_representation_keeps_shape_and_dtype(kind):
    x = images(2, 24)
    y = apply(kind, x)
    assert y.shape == x.shape and y.dtype == x.dtype and torch.isfinite(y).all()
