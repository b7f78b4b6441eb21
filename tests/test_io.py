"""bpnet.io: several files published together or not at all."""

from pathlib import Path

import pytest

from bpnet.io import copy_all_atomic


def test_copy_all_atomic_is_all_or_nothing(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    for name in ("a", "c"):
        (src / name).write_text(f"new {name}")
    (out / "a").write_text("old a")
    pairs = [(src / n, out / n) for n in ("a", "b", "c")]  # src/b is missing: the 2nd copy fails
    with pytest.raises(FileNotFoundError):
        copy_all_atomic(pairs)
    assert sorted(p.name for p in out.iterdir()) == ["a"]  # no c, no temporary file
    assert (out / "a").read_text() == "old a"

    (src / "b").write_text("new b")
    copy_all_atomic(pairs)
    assert {p.name: p.read_text() for p in out.iterdir()} == {
        "a": "new a", "b": "new b", "c": "new c"
    }  # fmt: skip


def test_copy_all_atomic_takes_a_generator(tmp_path):
    (tmp_path / "x").write_text("x")
    copy_all_atomic((tmp_path / "x", tmp_path / "deep" / name) for name in ("y", "z"))
    assert [p.read_text() for p in sorted(Path(tmp_path / "deep").iterdir())] == ["x", "x"]
