"""What a training run shows and leaves behind: a progress line, ``metrics.jsonl``, a loss curve,
and TensorBoard event files when the spec asks for them (``log_tensorboard: true``).

``metrics.jsonl`` has one JSON object per line: ``{"kind": "step", "epoch", "step", "loss",
"heatmap", "paf", "regularization", "lr", "images_per_s"}`` after every optimiser step and
``{"kind": "epoch", "epoch", "step", "loss", ..., "AP"?}`` after every epoch (``epoch`` is
1-based: the number of epochs completed). TensorBoard gets the same numbers as scalars
``step/<field>`` and ``epoch/<field>`` against the step.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import TextIO

import cv2
import numpy as np

from bpnet.errors import SpecError
from bpnet.io import DiskFullError, is_disk_full, write_text_atomic, write_with_atomic


def require_tensorboard() -> type:
    """TensorBoard's ``SummaryWriter`` class.

    Raises:
        SpecError: the ``tensorboard`` package is not installed.
    """
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise SpecError(
            "log_tensorboard: true needs the tensorboard package; pip install "
            "'bpnet[tensorboard]' or set log_tensorboard: false"
        ) from None
    return SummaryWriter


def tensorboard_writer(folder: str | os.PathLike, *, purge_step: int = 0):
    """A TensorBoard ``SummaryWriter`` on ``folder``; events from ``purge_step`` on (left by an
    interrupted run) are dropped, as ``metrics.jsonl`` drops them."""
    return require_tensorboard()(str(folder), purge_step=purge_step or None)


class MetricsLog:
    """Append-only JSONL log that a resumed run continues where its checkpoint left off.

    Args:
        path: the ``metrics.jsonl`` file.
        keep_until_step: records of later steps (written after the checkpoint the run resumes
            from, by the run that was interrupted) are dropped, so no step appears twice.
        tensorboard: a ``SummaryWriter`` that gets every numeric field as a scalar, or None.
    """

    def __init__(self, path: str | os.PathLike, *, keep_until_step: int = 0, tensorboard=None):
        self.path = Path(path)
        self.tensorboard = tensorboard
        self.records: list[dict] = []
        if self.path.is_file():
            for line in self.path.read_text().splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:  # a line cut short by a kill
                    continue
                if record.get("step", 0) <= keep_until_step:
                    self.records.append(record)
        write_text_atomic(self.path, "".join(json.dumps(r) + "\n" for r in self.records))

    def write(self, record: dict) -> None:
        self.records.append(record)
        try:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as err:  # a line cut short is skipped when the log is read again
            if is_disk_full(err):
                raise DiskFullError(self.path) from None
            raise
        if self.tensorboard is not None:
            kind = record.get("kind", "record")
            for name, value in record.items():
                if name not in ("kind", "epoch", "step") and isinstance(value, int | float):
                    self.tensorboard.add_scalar(f"{kind}/{name}", value, record.get("step", 0))
            if kind == "epoch":
                self.tensorboard.flush()

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()


class Progress:
    """One epoch's progress: a tqdm bar on a terminal, a plain line every ``every_secs`` in logs.

    Both show the same numbers, formatted by tqdm: epoch, step, elapsed and remaining time,
    the epoch's running mean loss, the learning rate and images/s::

        epoch 3/20:  45%|####5     | 45/100 [00:12<00:15, loss 0.01234, lr 1.0e-03, 28.4 img/s]

    A log (``stream`` not a terminal) gets no carriage returns: a line every ``every_secs``
    (the spec's ``log_every_n_secs``) and the epoch's last line, with the note (validation AP).
    """

    def __init__(
        self,
        epoch: int,
        num_epochs: int,
        steps: int,
        *,
        every_secs: float = 30.0,
        stream: TextIO | None = None,
    ):
        from tqdm import tqdm

        self.steps = steps
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.every = every_secs
        self.prefix = f"epoch {epoch}/{num_epochs}"
        self.start = self.last = time.perf_counter()
        self.done, self.postfix = 0, ""
        # the bar's rate would be steps/s; images/s is in the postfix instead
        self.bar = tqdm(
            total=steps,
            desc=self.prefix,
            unit="step",
            file=self.stream,
            disable=not self.tty,
            dynamic_ncols=True,
            mininterval=0.1,
            bar_format=_BAR_FORMAT,
        )

    def update(self, done: int, loss: float, lr: float, images_per_s: float) -> None:
        """Show ``done`` of the epoch's steps; ``loss`` is the epoch's mean so far."""
        self.done = done
        self.postfix = f"loss {loss:.5g}, lr {lr:.1e}, {images_per_s:.1f} img/s"
        if self.tty:
            self.bar.set_postfix_str(self.postfix, refresh=False)
            self.bar.update(done - self.bar.n)
            return
        now = time.perf_counter()
        if now - self.last >= self.every and done < self.steps:  # close() shows the last one
            self.last = now
            self.stream.write(self.line() + "\n")
            self.stream.flush()

    def line(self, note: str = "") -> str:
        """The progress as one plain line (what a log gets)."""
        from tqdm import tqdm

        postfix = ", ".join(p for p in (self.postfix, note) if p)
        return tqdm.format_meter(
            self.done,
            self.steps,
            time.perf_counter() - self.start,
            prefix=self.prefix,
            ascii=True,
            postfix=postfix,
            bar_format=_BAR_FORMAT,
        )

    def close(self, note: str = "") -> None:
        """Show the epoch's final line, with a note (e.g. the validation AP)."""
        if self.tty:
            if note:
                self.bar.set_postfix_str(f"{self.postfix}, {note}", refresh=False)
            self.bar.close()
            return
        self.stream.write(self.line(note) + "\n")
        self.stream.flush()


_BAR_FORMAT = (
    "{desc}: {percentage:3.0f}%|{bar:20}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]"
)


def plot_loss_curve(records: list[dict], path: str | os.PathLike, size=(480, 800)) -> None:
    """Draw the training loss (log scale) per step and per epoch into a PNG, atomically.

    Grey: every step; blue: epoch means (dots); green: validation AP on its own 0..1 axis at
    the right, when there is any.
    """
    height, width = size
    image = np.full((height, width, 3), 255, np.uint8)
    left, right, top, bottom = 70, 60, 30, 40
    steps = [r for r in records if r.get("kind") == "step" and _positive(r.get("loss"))]
    epochs = [r for r in records if r.get("kind") == "epoch" and _positive(r.get("loss"))]
    cv2.rectangle(image, (left, top), (width - right, height - bottom), (0, 0, 0), 1)
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(image, "training loss (log scale) vs step:", (left, 20), font, 0.5, (0, 0, 0), 1)
    grey, blue, green = (170, 170, 170), (200, 80, 0), (0, 150, 0)  # BGR
    for i, (label, colour) in enumerate(
        (("every step", grey), ("epoch mean", blue), ("val AP", green))
    ):
        cv2.putText(image, label, (left + 320 + 120 * i, 20), font, 0.5, colour, 1)
    if steps:
        xs = np.array([r["step"] for r in steps], np.float64)
        ys = np.log10([r["loss"] for r in steps])
        x_max = max(xs.max(), 1.0)
        y_lo, y_hi = ys.min(), ys.max()
        if y_hi - y_lo < 1e-6:
            y_lo, y_hi = y_lo - 0.5, y_hi + 0.5

        def to_px(x: np.ndarray, y: np.ndarray, lo: float = y_lo, hi: float = y_hi) -> np.ndarray:
            px = left + (width - left - right) * x / x_max
            py = height - bottom - (height - top - bottom) * (y - lo) / (hi - lo)
            return np.stack([px, py], -1).round().astype(np.int32)

        cv2.polylines(image, [to_px(xs, ys)], False, grey, 1, cv2.LINE_AA)
        if epochs:
            ex = np.array([r["step"] for r in epochs], np.float64)
            points = to_px(ex, np.log10([r["loss"] for r in epochs]))
            cv2.polylines(image, [points], False, blue, 2, cv2.LINE_AA)
            for p in points:
                cv2.circle(image, (int(p[0]), int(p[1])), 3, blue, -1, cv2.LINE_AA)
        aps = [r for r in epochs if isinstance(r.get("AP"), (int, float))]
        if aps:
            points = to_px(
                np.array([r["step"] for r in aps], np.float64),
                np.array([r["AP"] for r in aps]),
                lo=0.0,
                hi=1.0,
            )
            cv2.polylines(image, [points], False, green, 2, cv2.LINE_AA)
            cv2.putText(image, "AP 1", (width - right + 8, top + 12), font, 0.45, green, 1)
        for value, y in ((10**y_hi, top + 5), (10**y_lo, height - bottom)):
            cv2.putText(image, f"{value:.3g}", (4, y), font, 0.45, (0, 0, 0), 1)
        cv2.putText(
            image,
            f"step {int(x_max)}",
            (width - right - 80, height - bottom + 25),
            font,
            0.45,
            (0, 0, 0),
            1,
        )
    write_with_atomic(path, lambda tmp: _imwrite(tmp, image))


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def _imwrite(path: Path, image: np.ndarray) -> None:
    # encoded in memory, written by Python: a full disk is an OSError with its errno, not a
    # libpng message on stderr
    ok, data = cv2.imencode(path.suffix, image)
    if not ok:
        raise OSError(f"{path}: cv2.imencode failed")
    path.write_bytes(data.tobytes())


__all__ = ["MetricsLog", "Progress", "plot_loss_curve"]
