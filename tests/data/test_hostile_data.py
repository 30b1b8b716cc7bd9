"""Real-world image files: odd modes and sizes load as documented (config/README.md),
broken files stop the job naming the file, or are left out with `on_bad_image: skip`."""

from __future__ import annotations

import io
import logging

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from visual_ablation.data import decode as decoding
from visual_ablation.data import files, preparation, sources
from visual_ablation.plumbing.store import open_checked

SIZE = 16


def folder_spec(root, **kw):
    return {
        "name": "mine",
        "source": "imagefolder",
        "path": str(root),
        "image_size": SIZE,
        "seed": 0,
        "n": None,
        "format_version": 2,
        **kw,
    }


def decode(path):
    return decoding.decode_image(str(path), SIZE, f"image {path}")


def test_cmyk_jpeg_is_converted_to_rgb(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (40, 30), (0, 255, 255, 0)).save(path)  # pure red in CMYK
    image = decode(path)
    assert image.shape == (SIZE, SIZE, 3)
    assert image[..., 0].min() > 240 and image[..., 1:].max() < 15


def test_16_bit_png_is_scaled_to_8_bits(tmp_path):
    path = tmp_path / "deep.png"
    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (64, 1))
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode.startswith("I")  # really stored as 16-bit
    image = decode(path)
    assert image[..., 0].min() <= 8 and image[..., 0].max() >= 247  # full range kept
    assert np.array_equal(image[..., 0], image[..., 2])  # grey in all three channels
    assert np.all(np.diff(image[0, :, 0].astype(int)) >= 0)  # the ramp survives


def test_grayscale_and_rgba_images(tmp_path):
    gray, rgba = tmp_path / "gray.png", tmp_path / "rgba.png"
    Image.new("L", (20, 20), 100).save(gray)
    pixels = np.zeros((20, 20, 4), np.uint8)
    pixels[..., 2] = 255  # blue
    pixels[:, 10:, 3] = 255  # right half opaque, left half transparent
    Image.fromarray(pixels, "RGBA").save(rgba)
    assert np.all(decode(gray) == 100)
    image = decode(rgba)
    # transparent pixels show a white background, opaque ones their colour
    assert np.all(image[:, :4] == 255)
    assert np.all(image[:, -4:] == (0, 0, 255))


def test_one_pixel_image_is_upsampled(tmp_path):
    path = tmp_path / "dot.png"
    Image.new("RGB", (1, 1), (10, 200, 30)).save(path)
    assert np.all(decode(path) == (10, 200, 30))


@pytest.mark.parametrize("ext", ["jpg", "png"])
def test_10000_by_10000_image_is_decoded_to_the_stored_size(tmp_path, ext):
    path = tmp_path / f"huge.{ext}"
    pixels = np.zeros((10000, 10000), np.uint8)
    pixels[:, 5000:] = 255  # left black, right white
    Image.fromarray(pixels).save(path)
    image = decode(path)
    assert image.shape == (SIZE, SIZE, 3)
    assert image[:, :6].max() < 20 and image[:, -6:].min() > 235


def write_class_folder(root, n=12):
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(
                root / cls / f"{i}.png"
            )


def add_broken_files(root):
    """A truncated JPEG, a zero-byte PNG and a text file named .jpg; a .txt is no image
    at all and is not listed."""
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(buffer, "JPEG")
    truncated = root / "cat" / "truncated.jpg"
    truncated.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    empty = root / "dog" / "empty.png"
    empty.write_bytes(b"")
    text = root / "dog" / "notes.jpg"
    text.write_text("a text file with an image extension")
    (root / "dog" / "readme.txt").write_text("not an image extension: never listed")
    return [truncated, empty, text]


@pytest.mark.parametrize("which", [0, 1, 2])
def test_a_broken_file_stops_the_job_naming_it(tmp_path, which):
    root = tmp_path / "folder"
    write_class_folder(root)
    broken = add_broken_files(root)
    for other in broken[:which] + broken[which + 1 :]:
        other.unlink()
    with pytest.raises(decoding.DatasetError) as err:
        preparation.prepare(folder_spec(root), str(tmp_path / "mine.zarr"), progress=False)
    assert f"cannot read image {broken[which]}" in str(err.value)
    assert "datasets.mine.on_bad_image: skip" in str(err.value)
    assert not (tmp_path / "mine.zarr").exists()


def test_on_bad_image_skip_leaves_broken_files_out_and_records_them(tmp_path, caplog):
    root = tmp_path / "folder"
    write_class_folder(root)
    broken = add_broken_files(root)
    spec = folder_spec(root, on_bad_image="skip")
    with caplog.at_level(logging.WARNING):
        preparation.prepare(spec, str(tmp_path / "mine.zarr"), progress=False)
    group = open_checked(str(tmp_path / "mine.zarr"), spec)
    skipped = group.attrs["skipped"]
    assert [s["where"] for s in skipped] == [f"image {path}" for path in broken]
    assert all("cannot read" in s["error"] for s in skipped)
    for path in broken:
        assert str(path) in caplog.text
    # 24 good images, labels aligned to them
    assert group.attrs["n"] == 24 and group["images"].shape == (24, SIZE, SIZE, 3)
    assert len(group["labels"][:]) == len(group["source_index"][:]) == 24
    assert sorted(np.bincount(group["labels"][:])) == [12, 12]
    # the kept images are the good files, in order, each decoded as on its own
    source = files.ImageFolderSource(str(root))
    kept = group["source_index"][:]
    assert not {source.files[i] for i in kept} & {str(p) for p in broken}
    assert np.array_equal(group["images"][5], decode(source.files[kept[5]]))


def test_string_labels_in_npz(tmp_path):
    path = tmp_path / "d.npz"
    labels = np.array(["zebra", "ant", "moth"] * 10)
    np.savez(path, images=np.zeros((30, 8, 8), np.uint8), labels=labels)
    source = sources.open_source({"source": "npz", "path": str(path)})
    assert source.class_names == ["ant", "moth", "zebra"]
    assert source.labels[:3].tolist() == [2, 0, 1]


def test_parquet_with_missing_label_values_names_the_row(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"image": [b"x"] * 4, "label": ["a", "b", None, "a"]}), path)
    with pytest.raises(decoding.DatasetError, match=r"label missing at row 2\. Fill or drop"):
        sources.open_source({"source": "parquet", "path": str(path)})
