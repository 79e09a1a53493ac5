"""A small progress bar on stderr, dependency-free; silent unless stderr is a terminal."""

from __future__ import annotations

import sys
import time
from typing import TextIO

WIDTH = 30
EVERY_S = 0.1


class Bar:
    """`bar.update(done)` redraws at most every 0.1 s; `bar.close()` ends the line."""

    def __init__(
        self, label: str, total: int | None = None, stream: TextIO | None = None, *,
        enabled: bool | None = None,
    ) -> None:  # fmt: skip
        self.label = label
        self.total = total
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.started = time.monotonic()
        self._drawn_at = 0.0
        self.done = 0

    def update(self, done: int) -> None:
        """Record progress (absolute count) and redraw if due."""
        self.done = done
        now = time.monotonic()
        if self.enabled and now - self._drawn_at >= EVERY_S:
            self._drawn_at = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        elapsed = max(now - self.started, 1e-9)
        rate = f"{self.done / elapsed:,.0f}/s"
        if self.total:
            share = min(self.done / self.total, 1.0)
            filled = int(share * WIDTH)
            bar = "█" * filled + "·" * (WIDTH - filled)
            text = f"\r{self.label} {bar} {share:4.0%} {self.done:,}/{self.total:,} {rate}"
        else:
            text = f"\r{self.label} {self.done:,} {rate}"
        self.stream.write(text + "  ")
        self.stream.flush()

    def close(self) -> None:
        """Draw the final state and end the line."""
        if self.enabled:
            self._draw(time.monotonic())
            self.stream.write("\n")
            self.stream.flush()
