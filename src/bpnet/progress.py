"""Progress bars (tqdm) for the steps that take more than a few seconds.

A bar is drawn on stderr, and only when stderr is a terminal (tqdm's ``disable=None``): logs,
pipes and tests get no carriage-return redraws, and stdout keeps the results alone. Lines a
command prints while a bar runs go through :func:`above_bars`, so they do not cut a bar in two.

Example:
    >>> for record in progress(records, desc="evaluate", unit="image"):  # doctest: +SKIP
    ...     predict(record)
    evaluate: 100%|##########| 50/50 [00:35<00:00, 1.43image/s]
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import Any


def progress(
    iterable: Iterable | None = None,
    *,
    desc: str,
    unit: str = "image",
    total: int | None = None,
    leave: bool = True,
) -> Any:
    """A tqdm bar over ``iterable`` (or updated by hand: ``total`` and ``.update(n)``).

    Args:
        iterable: what to iterate; None for a bar updated by hand.
        desc: what runs, e.g. ``evaluate model.pth``.
        unit: what one item is; the bar shows items/s (``image/s``, ``batch/s``).
        total: the number of items when ``iterable`` has no length.
        leave: keep the finished bar on the screen (False: it disappears, for a step inside
            another one, such as the validation inside a training epoch).
    """
    from tqdm import tqdm

    return tqdm(
        iterable,
        desc=desc,
        unit=unit,
        total=total,
        leave=leave,
        file=sys.stderr,
        disable=None,  # no bar when stderr is not a terminal
        dynamic_ncols=True,
        mininterval=0.5,
    )


def above_bars() -> AbstractContextManager:
    """A block whose printed lines appear above the running bars instead of through them."""
    from tqdm import tqdm

    return tqdm.external_write_mode()


def step_callback(desc: str, unit: str, say: Callable[[str], None]) -> Callable[[int, int], None]:
    """A ``(done, total)`` progress callback: a bar on a terminal, else a line through ``say``
    at every tenth of the way (``  desc done/total``), so logs still show the step advance."""
    bar = None

    def report(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = progress(desc=desc, unit=unit, total=total)
        if not bar.disable:
            bar.update(done - bar.n)
            if done >= total:
                bar.close()
        elif done == total or done % max(1, total // 10) == 0:
            say(f"  {desc} {done}/{total}")

    return report


__all__ = ["above_bars", "progress", "step_callback"]
