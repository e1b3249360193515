"""Run conversion tasks on N threads, stopping all of them on the first failure or on Ctrl-C.

The work is I/O (in-kernel copies, file reads and writes, CRC computation), all of which release the GIL, so
threads are enough. Each worker gets its own slot (e.g. its own output data file). The main thread only waits,
in short intervals, so that a KeyboardInterrupt reaches it promptly; it then sets `cancel`, which every task
checks between pieces of work, and waits for the workers before re-raising.
"""
from __future__ import annotations

import queue
import threading
from typing import Callable, Sequence, TypeVar

from migrator.convert.storage.fileops import Cancelled

Slot = TypeVar("Slot")


def run_tasks(tasks: Sequence[Callable[[Slot], None]], slots: Sequence[Slot], cancel: threading.Event) -> None:
    """Run every task once, on as many threads as there are `slots`; re-raise the first error."""
    pending: queue.SimpleQueue = queue.SimpleQueue()
    for task in tasks:
        pending.put(task)
    errors: list[BaseException] = []

    def worker(slot: Slot) -> None:
        while not cancel.is_set():
            try:
                task = pending.get_nowait()
            except queue.Empty:
                return
            try:
                task(slot)
            except Cancelled:
                return
            except BaseException as error:  # noqa: BLE001 - handed to the main thread
                errors.append(error)
                cancel.set()
                return

    if len(slots) == 1:  # no thread: simpler tracebacks, and Ctrl-C lands in the task itself
        try:
            worker(slots[0])
        except KeyboardInterrupt:
            cancel.set()
            raise
    else:
        threads = [threading.Thread(target=worker, args=(slot,), daemon=True) for slot in slots]
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                while thread.is_alive():
                    thread.join(timeout=0.2)
        except BaseException:
            cancel.set()
            for thread in threads:
                thread.join()
            raise
    if errors:
        raise errors[0]
    if cancel.is_set():
        raise Cancelled()
