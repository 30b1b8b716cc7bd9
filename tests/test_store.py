"""Atomic writes, completeness and provenance checks of zarr stores."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from visual_ablation import store


def write(path, spec, rows=10, fail=False):
    with store.writing(str(path), spec) as group:
        writer = store.ChunkedWriter(store.create_array(group, "x", (rows, 3), np.float32, 4))
        for start in range(0, rows, 3):
            writer.append(np.full((min(3, rows - start), 3), start, np.float32))
            if fail and start >= 3:
                raise RuntimeError("killed mid-write")
        writer.close()


def test_complete_store_round_trips(tmp_path):
    path = tmp_path / "s.zarr"
    write(path, {"a": 1})
    group = store.open_checked(str(path), {"a": 1})
    assert group["x"].chunks == (4, 3)
    assert group["x"][:, 0].tolist() == [0, 0, 0, 3, 3, 3, 6, 6, 6, 9]


def test_failure_mid_write_leaves_no_store_and_no_partial(tmp_path):
    path = tmp_path / "s.zarr"
    with pytest.raises(RuntimeError):
        write(path, {"a": 1}, fail=True)
    assert list(tmp_path.iterdir()) == []


def test_failure_keeps_a_previous_store_untouched(tmp_path):
    path = tmp_path / "s.zarr"
    write(path, {"a": 1})
    with pytest.raises(RuntimeError):
        write(path, {"a": 2}, fail=True)
    assert store.open_checked(str(path), {"a": 1})["x"].shape == (10, 3)


def test_incomplete_store_is_refused(tmp_path):
    path = tmp_path / "s.zarr"
    write(path, {"a": 1})
    zarr.open_group(path, mode="r+").attrs["complete"] = False
    with pytest.raises(store.StoreError, match="incomplete.*--forcerun"):
        store.open_checked(str(path), {"a": 1})


def test_store_for_another_spec_is_refused_with_the_difference(tmp_path):
    path = tmp_path / "s.zarr"
    write(path, {"backbone": {"layers": ["a", "b"]}, "v": 1})
    with pytest.raises(store.StoreError) as err:
        store.open_checked(str(path), {"backbone": {"layers": ["a"]}, "v": 1, "new": 0})
    message = str(err.value)
    assert "built for another config" in message
    assert "backbone.layers: store has ['a', 'b'], config has ['a']" in message
    assert "new: missing in store" in message


def test_missing_or_broken_store_is_refused(tmp_path):
    with pytest.raises(store.StoreError, match="does not exist"):
        store.open_checked(str(tmp_path / "none.zarr"), {})
    (tmp_path / "junk.zarr").mkdir()
    with pytest.raises(store.StoreError, match="junk.zarr"):
        store.open_checked(str(tmp_path / "junk.zarr"), {})


def test_chunked_writer_refuses_short_writes(tmp_path):
    group = zarr.open_group(tmp_path / "g.zarr", mode="w")
    writer = store.ChunkedWriter(store.create_array(group, "x", (5, 2), np.float32, 2))
    writer.append(np.zeros((3, 2), np.float32))
    with pytest.raises(RuntimeError, match="wrote 3 rows"):
        writer.close()
