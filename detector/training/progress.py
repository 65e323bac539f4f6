"""Per-epoch progress line on stderr: bar, step, losses, images/s, ETA.

On a terminal the line is redrawn in place (``\\r``, at most ~10 times a second);
when stderr is not a terminal (logs, CI) plain lines are printed at most every
``plain_every_s`` seconds and at the end of the epoch.
"""

from __future__ import annotations

import sys
import time
from collections import defaultdict
from typing import TextIO

_LOSS_KEYS = ("loss", "cls_loss", "box_loss", "depth_loss")
_SHORT = {"loss": "loss", "cls_loss": "cls", "box_loss": "box", "depth_loss": "depth"}


def _hms(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:d}:{s:02d}"


class ProgressBar:
    def __init__(self, epoch: int, epochs: int, steps: int, stream: TextIO | None = None,
                 width: int = 20, plain_every_s: float = 30.0):
        self.epoch, self.epochs, self.steps = epoch, epochs, steps
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.width, self.plain_every_s = width, plain_every_s
        self._start = time.perf_counter()
        self._last_draw = -1e9

    def line(self, step: int, logs: dict, images_per_s: float | None) -> str:
        """The text for ``step`` steps done of ``self.steps`` (1-based epoch in the prefix)."""
        frac = min(1.0, step / max(1, self.steps))
        filled = int(round(frac * self.width))
        bar = "=" * filled + (">" if filled < self.width else "") + " " * max(0, self.width - filled - 1)
        parts = [f"epoch {self.epoch}/{self.epochs} [{bar}] {step}/{self.steps}"]
        parts += [f"{_SHORT[k]} {logs[k]:.4f}" for k in _LOSS_KEYS if k in logs]
        if images_per_s:
            parts.append(f"{images_per_s:.1f} img/s")
        elapsed = time.perf_counter() - self._start
        if step < self.steps and step > 0:
            parts.append(f"ETA {_hms(elapsed / step * (self.steps - step))}")
        else:
            parts.append(f"{_hms(elapsed)}")
        return "  ".join(parts)

    def update(self, step: int, logs: dict, images_per_s: float | None = None) -> None:
        now = time.perf_counter()
        last = step >= self.steps
        if self.tty:
            if last or now - self._last_draw >= 0.1:
                self.stream.write("\r\x1b[K" + self.line(step, logs, images_per_s))
                self._last_draw = now
        elif last or now - self._last_draw >= self.plain_every_s:
            self.stream.write(self.line(step, logs, images_per_s) + "\n")
            self._last_draw = now
        self.stream.flush()

    def close(self, message: str = "") -> None:
        """End the line (terminal) and print ``message`` (e.g. validation metrics)."""
        if self.tty:
            self.stream.write("\n")
        if message:
            self.stream.write(message + "\n")
        self.stream.flush()


class EpochStats:
    """Running sums of step logs and of timed step durations within one epoch."""

    def __init__(self):
        self.sums: dict[str, float] = defaultdict(float)
        self.done = self.timed = 0
        self.wait_s = self.busy_s = 0.0
        self.start = time.perf_counter()

    def add(self, logs: dict) -> None:
        for k, v in logs.items():
            self.sums[k] += v
        self.done += 1

    def means(self) -> dict:
        return {k: v / self.done for k, v in self.sums.items()}

    def images_per_s(self, batch_size: int) -> float | None:
        return batch_size * self.timed / self.busy_s if self.busy_s else None
