"""Every dataset source on small files the tests make, subset and split."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zarr
from PIL import Image

from visual_ablation.data import data_store, decode, files, preparation, procedural, sources, splits
from visual_ablation.plumbing.store import StoreError, open_checked


def spec(source, **kw):
    return {
        "name": "ds",
        "source": source,
        "image_size": 16,
        "seed": 0,
        "n": None,
        "format_version": 1,
        **kw,
    }


def build(tmp_path, s):
    path = str(tmp_path / "ds.zarr")
    preparation.prepare(s, path, progress=False)
    return open_checked(path, s)


def check_store(group, n, classes):
    images = group["images"][:]
    assert images.shape == (n, 16, 16, 3) and images.dtype == np.uint8
    labels = group["labels"][:]
    assert labels.shape == (n,) and set(np.unique(labels)) == set(range(classes))
    assert "split" not in group  # train jobs draw it from the labels
    assert group.attrs["n"] == n
    assert group.attrs["class_counts"] == np.bincount(labels, minlength=classes).tolist()


def test_sklearn_digits_is_the_real_bundled_set(tmp_path):
    group = build(tmp_path, spec("sklearn-digits"))
    check_store(group, 1797, 10)
    assert group.attrs["class_names"] == [str(i) for i in range(10)]
    from sklearn.datasets import load_digits

    assert np.array_equal(group["labels"][:], load_digits().target)


def test_subset_is_stratified_and_split_fractions_hold(tmp_path):
    group = build(tmp_path, spec("sklearn-digits", n=500))
    check_store(group, 500, 10)
    labels = group["labels"][:]
    counts = np.bincount(labels)
    assert counts.min() >= 45 and counts.max() <= 55  # ~50 per class
    split = splits.stratified_split(labels, 0.15, 0.2, 0, "ds")
    assert abs((split == 2).mean() - 0.2) < 0.01 and abs((split == 1).mean() - 0.15) < 0.01
    for cls in range(10):  # each class is in every part
        assert set(split[labels == cls]) == {0, 1, 2}


def test_resampled_splits_differ_per_run_and_are_deterministic():
    labels = np.repeat(np.arange(4), 50)
    shared = {"val": 0.15, "test": 0.2, "seed": 3, "resample": False}
    resampled = {**shared, "resample": True}
    fixed = splits.run_splits(labels, shared, [0, 1, 2], "ds")
    assert all(np.array_equal(fixed[0], fixed[r]) for r in (1, 2))
    assert np.array_equal(fixed[0], splits.stratified_split(labels, 0.15, 0.2, 3, "ds"))
    own = splits.run_splits(labels, resampled, [0, 1, 2], "ds")
    assert not np.array_equal(own[0], own[1]) and not np.array_equal(own[1], own[2])
    assert np.array_equal(own[1], splits.run_splits(labels, resampled, [1], "ds")[1])
    for split in own.values():  # every run's split is stratified with the same sizes
        assert splits.split_sizes(split) == splits.split_sizes(fixed[0])
        for cls in range(4):  # 50 images a class: 10 test, 7 or 8 val
            train, val, test = np.bincount(split[labels == cls], minlength=3).tolist()
            assert test == 10 and val in (7, 8) and train + val == 40
    # the test sets of resampled runs overlap, as the corrected resampled t assumes
    overlap = ((own[0] == 2) & (own[1] == 2)).sum()
    assert 0 < overlap < (own[0] == 2).sum()


def test_synthetic_shapes_are_deterministic_and_prefix_stable():
    a = procedural.ShapesSource(50, seed=3)
    b = procedural.ShapesSource(80, seed=3)
    img_a = np.concatenate(list(a.decode(np.arange(50), 32)))
    img_b = np.concatenate(list(b.decode(np.arange(50), 32)))
    assert np.array_equal(img_a, img_b) and np.array_equal(a.labels, b.labels[:50])
    c = procedural.ShapesSource(50, seed=4)
    assert not np.array_equal(img_a, np.concatenate(list(c.decode(np.arange(50), 32))))


@pytest.mark.parametrize("source", ["synthetic-shapes", "synthetic-cue-conflict"])
def test_rendering_in_several_processes_writes_the_same_store(tmp_path, source):
    """A data job renders a procedural source's images in `workers` processes (chunks of
    a decode batch, in order): the store is the same, array for array, as one process's."""
    extra = {"cue": "texture", "agreement": 1.0, "conflict": 0.2} if "cue" in source else {}
    s = spec(source, n=1100, **extra)
    stores = []
    for workers in (1, 3):
        path = str(tmp_path / f"w{workers}.zarr")
        preparation.prepare(s, path, progress=False, workers=workers)
        stores.append(open_checked(path, s))
    one, three = stores
    assert sorted(one.array_keys()) == sorted(three.array_keys())
    for name in one.array_keys():
        assert np.array_equal(one[name][:], three[name][:]), name
    assert one["images"].shape == (1100, 16, 16, 3)
    unique = ("store_id", "provenance")  # each store's own identity and time
    attrs = [{k: v for k, v in g.attrs.items() if k not in unique} for g in stores]
    assert attrs[0] == attrs[1]


def test_synthetic_shapes_cover_every_shape_with_varied_nuisances(tmp_path):
    group = build(tmp_path, spec("synthetic-shapes", n=400))
    check_store(group, 400, len(procedural.SHAPES))
    assert len(procedural.SHAPES) >= 6
    images = group["images"][:].astype(float)
    assert images.reshape(400, -1).std(axis=0).mean() > 40  # colours/positions vary


def test_shape_masks_are_distinct():
    yy, xx = np.mgrid[-1.2:1.2:64j, -1.2:1.2:64j]
    masks = {s: procedural.ShapesSource._mask(s, xx, yy) for s in procedural.SHAPES}
    for s, m in masks.items():
        assert 0.1 < m.mean() < 0.9, s
    names = list(masks)
    for i, s in enumerate(names):
        for t in names[i + 1 :]:
            assert (masks[s] != masks[t]).mean() > 0.03, (s, t)


def make_folder(root, sizes=((20, 30), (64, 48), (7, 7))):
    rng = np.random.default_rng(0)
    for c, cls in enumerate(("cat", "dog", "eel")):
        (root / cls).mkdir(parents=True)
        for i in range(10):
            h, w = sizes[i % len(sizes)]
            img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
            img[..., c] = 255
            ext = ".png" if i % 2 else ".jpg"
            Image.fromarray(img).save(root / cls / f"{i}{ext}")
    (root / "cat" / "notes.txt").write_text("not an image, not listed")


def test_imagefolder_reads_any_size_and_format(tmp_path):
    root = tmp_path / "folder"
    make_folder(root)
    group = build(tmp_path, spec("imagefolder", path=str(root)))
    check_store(group, 30, 3)
    assert group.attrs["class_names"] == ["cat", "dog", "eel"]
    images, labels = group["images"][:], group["labels"][:]
    for c in range(3):  # the class's colour channel survives decoding and resizing
        assert images[labels == c][..., c].mean() > 200


def test_parquet_with_image_bytes_and_string_labels(tmp_path):
    rng = np.random.default_rng(1)
    blobs, labels = [], []
    for i in range(40):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(buf, "PNG")
        blobs.append({"bytes": buf.getvalue(), "path": f"{i}.png"})
        labels.append("yes" if i % 2 else "no")
    path = tmp_path / "train.parquet"
    pq.write_table(pa.table({"img": blobs, "answer": labels}), path, row_group_size=7)
    s = spec("parquet", path=str(path), image_column="img", label_column="answer", n=30)
    group = build(tmp_path, s)
    check_store(group, 30, 2)
    assert group.attrs["class_names"] == ["no", "yes"]
    # each stored image is the decoded (resized) parquet image of its source row
    rows = group["source_index"][:]
    first = Image.open(io.BytesIO(blobs[rows[0]]["bytes"]))
    assert np.array_equal(group["images"][0], decode.to_rgb_square(first, 16))
    assert np.array_equal(group["labels"][:], np.array([r % 2 for r in rows]))


def test_parquet_missing_column_is_named(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"image": [b"x"], "y": [1]}), path)
    with pytest.raises(decode.DatasetError, match="no column 'label' \\(label_column\\)"):
        sources.open_source(spec("parquet", path=str(path)))


def test_npz_grayscale_float_images(tmp_path):
    rng = np.random.default_rng(2)
    path = tmp_path / "d.npz"
    np.savez(path, images=rng.random((30, 10, 10)), labels=np.repeat([3, 7, 9], 10))
    group = build(tmp_path, spec("npz", path=str(path)))
    check_store(group, 30, 3)
    assert group.attrs["class_names"] == ["3", "7", "9"]
    img = group["images"][:]
    assert np.array_equal(img[..., 0], img[..., 1])  # grey copied to RGB


def test_store_is_refused_for_another_spec(tmp_path):
    s = spec("sklearn-digits", n=100)
    build(tmp_path, s)
    with pytest.raises(StoreError, match="n: store has 100, config has 120"):
        open_checked(str(tmp_path / "ds.zarr"), {**s, "n": 120})


def test_failed_prepare_leaves_nothing_at_the_path(tmp_path):
    root = tmp_path / "folder"
    make_folder(root)
    (root / "dog" / "bad.png").write_bytes(b"\x89PNG truncated")
    with pytest.raises(decode.DatasetError, match="bad.png"):
        preparation.prepare(spec("imagefolder", path=str(root)), str(tmp_path / "x.zarr"), False)
    assert list(tmp_path.glob("*.zarr")) == [] and list(tmp_path.glob(".x.zarr.partial*")) == []


def test_tiny_classes_cannot_be_split(tmp_path):
    labels = np.array([0] * 20 + [1])
    with pytest.raises(splits.SplitError, match="smallest class: 1"):
        splits.stratified_split(labels, 0.15, 0.2, 0, "ds")


def test_a_dataset_too_small_for_the_split_stops_before_decoding(tmp_path):
    s = spec("sklearn-digits", n=12)  # 12 images of 10 classes
    with pytest.raises(splits.SplitError, match="cannot split 12 images of 10 classes"):
        preparation.prepare(
            s, str(tmp_path / "x.zarr"), False, split={"val": 0.15, "test": 0.2, "seed": 0}
        )
    assert list(tmp_path.glob("*.zarr")) == []


def test_zarr_store_is_row_chunked_and_compressed(tmp_path):
    build(tmp_path, {**spec("synthetic-shapes", n=400), "image_size": 64})
    images = zarr.open_group(tmp_path / "ds.zarr")["images"]
    assert images.chunks == ((4 << 20) // (64 * 64 * 3), 64, 64, 3)  # ~4 MiB of rows
    # lz4 (fast to read) and a checksum; the noisy shapes hardly compress, digits do
    assert [type(c).__name__ for c in images.compressors] == ["BloscCodec", "Crc32cCodec"]
    assert images.compressors[0].cname.value == "lz4"
    build(tmp_path / "digits", spec("sklearn-digits", n=400))
    digits = zarr.open_group(tmp_path / "digits" / "ds.zarr")["images"]
    on_disk = sum(f.stat().st_size for f in (tmp_path / "digits").rglob("*") if f.is_file())
    assert on_disk < 0.7 * digits.nbytes


def test_imagefolder_ignores_hidden_folders_and_files(tmp_path):
    """Jupyter leaves .ipynb_checkpoints/ beside the class folders: not a class, and
    hidden files or folders inside a class are not images."""
    root = tmp_path / "folder"
    make_folder(root)
    checkpoints = root / ".ipynb_checkpoints"
    checkpoints.mkdir()
    (checkpoints / "notebook-checkpoint.ipynb").write_text("{}")
    Image.new("RGB", (8, 8)).save(root / "dog" / ".hidden.png")
    (root / "eel" / ".thumbs").mkdir()
    Image.new("RGB", (8, 8)).save(root / "eel" / ".thumbs" / "0.png")
    source = files.ImageFolderSource(str(root))
    assert source.class_names == ["cat", "dog", "eel"]
    assert len(source.files) == 30
    assert not any("/." in f for f in source.files)
    group = build(tmp_path, spec("imagefolder", path=str(root)))
    assert group.attrs["class_names"] == ["cat", "dog", "eel"] and group.attrs["n"] == 30


def test_imagefolder_class_folder_without_images_is_named(tmp_path):
    root = tmp_path / "folder"
    make_folder(root)
    (root / "fox").mkdir()
    (root / "fox" / "readme.txt").write_text("images to come")
    with pytest.raises(decode.DatasetError, match="class folder 'fox' has no image"):
        files.ImageFolderSource(str(root))


def write_idx(path, values: np.ndarray, compress: bool) -> None:
    """An IDX file as MNIST's are written: magic 0x0000 08 ndim, big-endian dims, bytes."""
    import gzip

    header = bytes([0, 0, 8, values.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in values.shape
    )
    raw = header + values.astype(np.uint8).tobytes()
    (gzip.open if compress else open)(str(path), "wb").write(raw)


def test_idx_reads_mnist_format_parts_in_order(tmp_path):
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, size=(30, 5, 7), dtype=np.uint8)
    test = rng.integers(0, 256, size=(12, 5, 7), dtype=np.uint8)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", train, True)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.arange(30) % 3, True)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", test, False)  # plain files too
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.arange(12) % 3, False)
    source = sources.open_source(spec("idx", path=str(tmp_path)))
    assert np.array_equal(source.images, np.concatenate([train, test]))
    assert source.parts == ["train", "t10k"] and list(np.bincount(source.part)) == [30, 12]
    assert list(source.labels[:4]) == [0, 1, 2, 0] and source.class_names == ["0", "1", "2"]
    # grey, as RGB: the three channels equal, and the store holds every image
    group = build(tmp_path, spec("idx", path=str(tmp_path)))
    check_store(group, 42, 3)
    images = group["images"][:]
    assert (images[..., 0] == images[..., 2]).all()
    only = sources.open_source(spec("idx", path=str(tmp_path), idx_parts=["t10k"]))
    assert np.array_equal(only.images, test)


def test_idx_bad_files_are_named(tmp_path):
    with pytest.raises(decode.DatasetError, match="apt-get install dataset-fashion-mnist"):
        sources.open_source(spec("idx", path=str(tmp_path)))
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((4, 2, 2)), False)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x09xx")
    with pytest.raises(decode.DatasetError, match="truncated"):
        sources.open_source(spec("idx", path=str(tmp_path), idx_parts=["train"]))
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(b"PK\x03\x04 not idx")
    with pytest.raises(decode.DatasetError, match="not an IDX file"):
        sources.open_source(spec("idx", path=str(tmp_path), idx_parts=["train"]))


FASHION_MNIST = "/usr/share/datasets/fashion-mnist"


def test_fashion_mnist_from_debian_is_the_real_set():
    """Debian's dataset-fashion-mnist: 60k + 10k 28x28 grey images, 10 classes of 6,000 +
    1,000 each; the first training image is an ankle boot (class 9), as the dataset's
    README shows."""
    import os

    if not os.path.isdir(FASHION_MNIST):
        pytest.skip("Fashion-MNIST missing: apt-get install dataset-fashion-mnist")
    source = sources.open_source(spec("idx", path=FASHION_MNIST))
    assert source.images.shape == (70000, 28, 28)
    assert list(np.bincount(source.labels[:60000])) == [6000] * 10
    assert list(np.bincount(source.labels[60000:])) == [1000] * 10
    # its own partition (config/fashion-mnist.yaml): t10k is every run's test set
    given = sources.open_source(
        spec("idx", path=FASHION_MNIST, idx_parts=["train", "t10k"], split="given")
    )
    split = {"val": 0.15, "test": 0.2, "seed": 0, "resample": True}
    by_run = splits.run_splits(given.labels, split, [0, 1], "fashion", given=given.given_split)
    assert splits.split_sizes(by_run[0]) == {"train": 48750, "val": 11250, "test": 10000}
    assert (by_run[0][60000:] == splits.TEST).all() and (by_run[1][60000:] == splits.TEST).all()
    assert source.labels[0] == 9 and source.labels[60000] == 9
    assert 70 < source.images.mean() < 80  # Fashion-MNIST's mean pixel is about 72.9


def make_split_folder(root, parts=("train", "val"), per_part=(12, 6)):
    """ImageNet's layout: <part>/<class>/<image>, each class its own colour."""
    rng = np.random.default_rng(3)
    for part, count in zip(parts, per_part, strict=True):
        for c, cls in enumerate(("cat", "dog", "eel")):
            (root / part / cls).mkdir(parents=True)
            for i in range(count):
                img = rng.integers(0, 255, (9, 9, 3), dtype=np.uint8)
                img[..., c] = 255
                Image.fromarray(img).save(root / part / cls / f"{i}.png")


def test_imagefolder_uses_a_given_train_val_split(tmp_path):
    """train/ and val/: val/ is every run's test set, validation is drawn from train/ by
    each run, and every stored image keeps its part and its file."""
    root = tmp_path / "imagenet-style"
    make_split_folder(root)
    s = spec("imagefolder", path=str(root), split="given")
    assert files.ImageFolderSource.check_path(s) is None
    group = build(tmp_path, s)
    check_store(group, 54, 3)
    assert group.attrs["class_names"] == ["cat", "dog", "eel"]
    given = data_store.read_given_split(group)
    names = data_store.read_file_names(group)
    assert [n.split("/")[0] for n in names] == ["train"] * 36 + ["val"] * 18
    assert (given == np.where(np.arange(54) < 36, splits.TRAIN, splits.TEST)).all()
    labels = group["labels"][:]
    assert [n.split("/")[1] for n in names] == [["cat", "dog", "eel"][k] for k in labels]
    split = {"val": 0.15, "test": 0.2, "seed": 0, "resample": True}
    by_run = splits.run_splits(labels, split, [0, 1], "ds", given=given)
    for run_split in by_run.values():
        assert (run_split[36:] == splits.TEST).all()  # the val/ folder, every run
        # ceil(0.15 / 0.8 * 36) = 7 of train/'s images, shared among the classes
        assert sorted(np.bincount(labels[run_split == splits.VAL])) == [2, 2, 3]
    assert not np.array_equal(by_run[0], by_run[1])  # each run its own validation draw
    # a subset keeps each part's share of every class
    sub = build(tmp_path / "sub", spec("imagefolder", path=str(root), split="given", n=27))
    sub_given, sub_labels = data_store.read_given_split(sub), sub["labels"][:]
    assert list(np.bincount(sub_labels[sub_given == splits.TRAIN])) == [6, 6, 6]
    assert list(np.bincount(sub_labels[sub_given == splits.TEST])) == [3, 3, 3]


def test_imagefolder_given_three_parts_are_used_as_they_are(tmp_path):
    root = tmp_path / "three"
    make_split_folder(root, ("train", "validation", "test"), (8, 3, 4))
    source = sources.open_source(spec("imagefolder", path=str(root), split="given"))
    assert list(source.given_split) == [0] * 24 + [1] * 9 + [2] * 12
    split = {"val": 0.15, "test": 0.2, "seed": 0, "resample": True}
    by_run = splits.run_splits(source.labels, split, [0, 3], "ds", given=source.given_split)
    assert all(np.array_equal(s, source.given_split) for s in by_run.values())


def test_imagefolder_given_split_is_refused_where_it_cannot_be_used(tmp_path):
    plain = tmp_path / "plain"
    make_folder(plain)
    problem = files.ImageFolderSource.check_path(
        spec("imagefolder", path=str(plain), split="given")
    )
    assert problem.startswith("split: given reads <path>/train/<class>/<image>")
    assert "holds cat, dog, eel" in problem and "Remove `split: given`" in problem
    no_train = tmp_path / "no-train"
    make_split_folder(no_train, ("val", "test"), (2, 2))
    problem = files.ImageFolderSource.check_path(
        spec("imagefolder", path=str(no_train), split="given")
    )
    assert "needs a train part and a val or test part, found test, val" in problem
    missing = tmp_path / "missing"
    make_split_folder(missing)
    for image in (missing / "train" / "eel").iterdir():
        image.unlink()
    (missing / "train" / "eel").rmdir()
    with pytest.raises(
        decode.DatasetError, match="class 'eel' is in another part but not in train/"
    ):
        sources.open_source(spec("imagefolder", path=str(missing), split="given"))


def parquet_part(path, rows, seed, with_paths=True):
    rng = np.random.default_rng(seed)
    blobs, labels = [], []
    for i in range(rows):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (6, 6, 3), dtype=np.uint8)).save(buf, "PNG")
        name = f"{path.stem}/{i}.png" if with_paths else None
        blobs.append({"bytes": buf.getvalue(), "path": name})
        labels.append(["no", "yes"][i % 2])
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"image": blobs, "label": labels}), path, row_group_size=5)
    return blobs


def test_parquet_folder_as_hugging_face_writes_it_gives_its_split(tmp_path):
    """data/train-*.parquet and data/test-*.parquet: read in name order, the test file is
    every run's test set, and each image's name is its struct's path (or file:row)."""
    root = tmp_path / "data"
    train = parquet_part(root / "train-00000-of-00002.parquet", 12, 0)
    train += parquet_part(root / "train-00001-of-00002.parquet", 8, 1, with_paths=False)
    test = parquet_part(root / "test-00000-of-00001.parquet", 10, 2)
    s = spec("parquet", path=str(root), image_column="image", label_column="label")
    assert files.ParquetSource.check_path({**s, "split": "given"}) is None
    drawn = sources.open_source(s)
    assert drawn.given_split is None and len(drawn.labels) == 30
    # name order: test-00000 first, then the two train files
    assert drawn.file_names[:2] == ["test-00000-of-00001/0.png", "test-00000-of-00001/1.png"]
    assert drawn.file_names[-1] == "train-00001-of-00002.parquet:7"
    group = build(tmp_path, {**s, "split": "given"})
    assert list(data_store.read_given_split(group)) == [2] * 10 + [0] * 20
    rows = group["source_index"][:]
    blobs = test + train
    assert np.array_equal(
        group["images"][25],
        decode.to_rgb_square(Image.open(io.BytesIO(blobs[rows[25]]["bytes"])), 16),
    )
    one_file = files.ParquetSource.check_path(
        {**s, "path": str(root / "test-00000-of-00001.parquet"), "split": "given"}
    )
    assert "is one file. Point path at the folder" in one_file


def test_idx_parts_give_their_split(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((30, 4, 4)), False)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.arange(30) % 3, False)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.ones((9, 4, 4)), False)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.arange(9) % 3, False)
    s = spec("idx", path=str(tmp_path), idx_parts=["train", "t10k"], split="given")
    source = sources.open_source(s)
    assert list(source.given_split) == [splits.TRAIN] * 30 + [splits.TEST] * 9
    problem = files.IdxSource.check_path({**s, "idx_parts": ["train"]})
    assert "idx_parts in the order train, (val,) test, and they are ['train']" in problem
