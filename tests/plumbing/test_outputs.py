"""Output files appear whole or not at all."""

from __future__ import annotations

import pytest

from visual_ablation.plumbing import outputs


def test_a_failed_write_keeps_the_old_file_and_leaves_no_partial(tmp_path):
    path = tmp_path / "sub" / "table.csv"
    with outputs.replacing(str(path)) as partial:
        open(partial, "w").write("old\n")
    with pytest.raises(RuntimeError), outputs.replacing(str(path)) as partial:
        open(partial, "w").write("half")
        raise RuntimeError("killed mid-write")
    assert path.read_text() == "old\n"
    assert [p.name for p in path.parent.iterdir()] == ["table.csv"]
