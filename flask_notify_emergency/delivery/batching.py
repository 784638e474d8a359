"""Group commit: callers of one worker that arrive together share one database transaction.

Every caller puts its items in a queue. If no batch is running, the caller runs one itself:
it takes what is queued (its own items first, up to ``max_items``), runs the transaction for
all of them and hands each caller its own results. Whoever arrives while a batch runs waits;
when the batch ends, the first of them runs the next one with everything that gathered
meanwhile. Nothing waits for a timer: a lone caller runs at once, alone, and under load a
batch holds whatever arrived during the previous one. No caller runs another's batch after
its own, so none waits longer than its own batch and the one before it.
"""

from __future__ import annotations

import threading
from typing import Callable, Generic, Sequence, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class _Call(Generic[T, R]):
    __slots__ = ("items", "results", "error", "done", "lead")

    def __init__(self, items: Sequence[T]) -> None:
        self.items = items
        self.results: list[R] = []
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.lead = False  # woken to run the next batch rather than with results


class GroupCommit(Generic[T, R]):
    """``run(items) -> results`` (one result per item, in order) for batches of callers."""

    def __init__(self, run: Callable[[list[T]], list[R]], max_items: int = 500) -> None:
        self.run = run
        self.max_items = max_items
        self._lock = threading.Lock()
        self._queue: list[_Call[T, R]] = []
        self._running = False
        #: batches run and items they held (for tests and benchmarks)
        self.batches = 0
        self.items = 0

    def __call__(self, items: Sequence[T]) -> list[R]:
        call: _Call[T, R] = _Call(items)
        with self._lock:
            self._queue.append(call)
            lead = not self._running
            self._running = True
        if not lead:
            call.done.wait()
            if not call.lead:
                return self._outcome(call)
        self._run_batch()
        return self._outcome(call)

    def _run_batch(self) -> None:
        with self._lock:
            batch: list[_Call[T, R]] = []
            size = 0
            while self._queue and (not batch or size + len(self._queue[0].items) <= self.max_items):
                call = self._queue.pop(0)
                batch.append(call)
                size += len(call.items)
            self.batches += 1
            self.items += size
        try:
            results = self.run([item for call in batch for item in call.items])
            if len(results) != size:
                raise RuntimeError(f"a batch of {size} items returned {len(results)} results")
            at = 0
            for call in batch:
                call.results = list(results[at:at + len(call.items)])
                at += len(call.items)
        except BaseException as exc:  # every caller of the batch hears of it
            for call in batch:
                call.error = exc
        finally:
            with self._lock:
                following = self._queue[0] if self._queue else None
                if following is None:
                    self._running = False
                else:
                    following.lead = True
            for call in batch:
                call.done.set()
            if following is not None:
                following.done.set()

    @staticmethod
    def _outcome(call: _Call[T, R]) -> list[R]:
        if call.error is not None:
            raise call.error
        return call.results
