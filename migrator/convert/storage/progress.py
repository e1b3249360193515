"""Progress of a conversion in bytes: a rich bar (bytes, speed, ETA) on a terminal, plain log lines otherwise.

Workers call `advance(n)` from several threads; both reporters are thread-safe. Output goes to stderr so that
stdout stays clean for `--dry-run` plans and summaries.
"""
from __future__ import annotations

import sys
import threading
import time
from typing import TextIO


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover


class Progress:
    """Interface: start(total, description), advance(n), finish()."""

    def start(self, total: int, description: str) -> None: ...

    def advance(self, n: int) -> None: ...

    def finish(self) -> None: ...


class PlainProgress(Progress):
    """One line at start, then at most one line every `interval` seconds, and one at the end."""

    def __init__(self, stream: TextIO | None = None, interval: float = 5.0) -> None:
        self._stream = stream or sys.stderr
        self._interval = interval
        self._lock = threading.Lock()
        self._done = 0
        self._total = 0
        self._started = 0.0
        self._last = 0.0
        self._description = ""

    def start(self, total: int, description: str) -> None:
        self._total, self._description = total, description
        self._started = self._last = time.monotonic()
        print(f"nemo-migrate: {description}: {_human(total)}", file=self._stream, flush=True)

    def advance(self, n: int) -> None:
        with self._lock:
            self._done += n
            now = time.monotonic()
            if now - self._last < self._interval:
                return
            self._last = now
            done, total, elapsed = self._done, self._total, now - self._started
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (total - done) / rate if rate > 0 else 0.0
        percent = 100.0 * done / total if total else 100.0
        print(f"nemo-migrate: {self._description}: {_human(done)} of {_human(total)} ({percent:.0f}%), "
              f"{_human(rate)}/s, about {eta:.0f} s left", file=self._stream, flush=True)

    def finish(self) -> None:
        elapsed = time.monotonic() - self._started
        print(f"nemo-migrate: {self._description}: done, {_human(self._done)} in {elapsed:.1f} s",
              file=self._stream, flush=True)


class RichProgress(Progress):
    """A rich progress bar with bytes done, transfer speed and time remaining."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (BarColumn, DownloadColumn, Progress as RichBar, TextColumn,
                                   TimeRemainingColumn, TransferSpeedColumn)

        self._bar = RichBar(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                            TimeRemainingColumn(), console=Console(stderr=True), transient=False)
        self._task = None
        self._lock = threading.Lock()

    def start(self, total: int, description: str) -> None:
        self._bar.start()
        self._task = self._bar.add_task(description, total=total)

    def advance(self, n: int) -> None:
        with self._lock:
            self._bar.update(self._task, advance=n)

    def finish(self) -> None:
        self._bar.stop()


def make_progress(stream: TextIO | None = None) -> Progress:
    """The rich bar when stderr is a terminal, plain lines otherwise."""
    stream = stream or sys.stderr
    if stream.isatty():
        return RichProgress()
    return PlainProgress(stream)
