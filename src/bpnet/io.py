"""Atomic file output: a reader never sees a half-written file."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bpnet.errors import DatasetError


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success.

    Example:
        >>> with atomic_path("out.json") as tmp:  # doctest: +SKIP
        ...     tmp.write_text("{}")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # keep the real suffix last: writers such as cv2.imwrite choose the format by it
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: str | os.PathLike, obj: Any, indent: int | None = None) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=indent)


def write_with_atomic(path: str | os.PathLike, writer: Callable[[Path], None]) -> None:
    """Call ``writer(tmp_path)`` and move the result onto ``path`` if it returns normally."""
    with atomic_path(path) as tmp:
        writer(tmp)


def read_json(path: str | os.PathLike) -> Any:
    """Parse a JSON file; a missing, unreadable or malformed file is a one-line DatasetError."""
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise DatasetError(
            f"{path}: malformed JSON at line {err.lineno} column {err.colno} ({err.msg}); "
            "fix the file or download it again"
        ) from None
    except UnicodeDecodeError as err:
        raise DatasetError(f"{path}: not UTF-8 JSON text ({err.reason}); fix the file") from None
    except OSError as err:
        raise DatasetError(f"{path}: cannot read ({err.strerror}); check the path") from None
