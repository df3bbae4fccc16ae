"""Dynamic batching: requests that arrive close together share one call of the model.

    batcher = Batcher(run, max_items=64, wait_ms=5)     # run(items, key) -> one output per item
    outputs = await batcher.submit(items, key, timeout=30)

A request is a list of items (sentences) and a key (its decoding options). One worker task
takes the oldest waiting request and every request already waiting behind it, and, when the
previous batch had company (more than one request), keeps collecting for up to `wait_ms`
milliseconds, until `max_items` items wait; then it calls `run` once per key among them, with
the items of every request of that key concatenated in arrival order; each caller gets back
its own slice. A lone caller thus never waits for company that is not coming, while under
load the batches fill up. The call runs in one worker thread, off the event loop, so the
server keeps accepting requests while the model works (and what arrives meanwhile forms the
next batch). With max_items = 1 every request is a call of its own: the unbatched server.

A request that waits longer than its `timeout` raises RequestTimeout; if it had not started,
it is not computed (also when it was collected with a batch of other keys that ran first);
a call already running finishes, its answers unused. More than `max_queue` waiting items:
Busy, at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field


class Busy(RuntimeError):
    """The queue is full: the server answers 503 and the caller may retry."""


class RequestTimeout(RuntimeError):
    """The request was not answered within its time limit."""


@dataclass
class _Request:
    items: Sequence
    key: Hashable
    future: asyncio.Future
    arrived: float = field(default_factory=time.perf_counter)


@dataclass
class BatchStats:
    """What the batcher did: calls of the model and the items they held."""

    calls: int = 0
    items: int = 0
    largest: int = 0

    def as_dict(self) -> dict:
        return {"calls": self.calls, "items": self.items, "largest_batch": self.largest,
                "mean_batch": self.items / self.calls if self.calls else 0.0}


class Batcher:
    def __init__(self, run: Callable[[list, Hashable], list], *, max_items: int = 64,
                 wait_ms: float = 5.0, max_queue: int = 4096):
        if max_items < 1 or wait_ms < 0 or max_queue < 1:
            raise ValueError("need max_items >= 1, wait_ms >= 0 and max_queue >= 1")
        self.run, self.max_items, self.wait = run, max_items, wait_ms / 1000
        self.max_queue = max_queue
        self.stats = BatchStats()
        self._queue: asyncio.Queue[_Request] | None = None
        self._waiting = 0  # items queued, not yet taken
        self._worker: asyncio.Task | None = None
        self._company = False  # did the last batch hold more than one request?
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="seqlab-model")

    # ------------------------------------------------------------------ life cycle
    def start(self) -> None:
        """Start the worker on the running event loop (the app's startup)."""
        self._queue = asyncio.Queue()
        self._worker = asyncio.get_running_loop().create_task(self._work())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        self._executor.shutdown(wait=True, cancel_futures=True)

    async def call(self, fn: Callable, *args):
        """fn(*args) in the model's thread (for requests that are not batched)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    # ------------------------------------------------------------------ requests
    async def submit(self, items: Sequence, key: Hashable, timeout: float | None = None
                     ) -> list:
        """The outputs of `items` (one each, in order), computed with others of the same key."""
        if self._queue is None:
            raise RuntimeError("Batcher.start() was not called")
        if self._waiting + len(items) > self.max_queue:
            raise Busy(f"the server is busy ({self._waiting} sentences waiting); retry later")
        request = _Request(list(items), key, asyncio.get_running_loop().create_future())
        self._waiting += len(items)
        self._queue.put_nowait(request)
        try:
            return await asyncio.wait_for(asyncio.shield(request.future), timeout)
        except asyncio.TimeoutError:
            request.future.cancel()  # a request not yet taken is skipped by the worker
            raise RequestTimeout(f"no answer within the time limit of {timeout:g} s") from None

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            requests = await self._collect(loop)
            groups: dict[Hashable, list[_Request]] = {}
            for r in requests:
                groups.setdefault(r.key, []).append(r)
            for key, group in groups.items():
                await self._run_group(loop, key, group)

    async def _collect(self, loop) -> list[_Request]:
        """The oldest request, those waiting behind it, and (after a batch with company)
        those arriving within `wait` of it, up to max_items."""
        assert self._queue is not None
        requests = [await self._queue.get()]
        count = len(requests[0].items)
        deadline = loop.time() + (self.wait if self._company else 0.0)
        while count < self.max_items:
            try:
                if self._queue.empty():
                    left = deadline - loop.time()
                    if left <= 0:
                        break
                    request = await asyncio.wait_for(self._queue.get(), left)
                else:
                    request = self._queue.get_nowait()
            except asyncio.TimeoutError:
                break
            requests.append(request)
            count += len(request.items)
        self._waiting -= count
        self._company = len(requests) > 1
        return [r for r in requests if not r.future.done()]  # timed out while waiting: skip

    async def _run_group(self, loop, key: Hashable, group: list[_Request]) -> None:
        group = [r for r in group if not r.future.done()]  # gave up while others ran: skip
        if not group:
            return
        items = [item for r in group for item in r.items]
        try:
            outputs = await loop.run_in_executor(self._executor, self.run, items, key)
        except Exception as exc:  # the callers get the error, the worker goes on
            for r in group:
                if not r.future.done():
                    r.future.set_exception(exc)
            return
        self.stats.calls += 1
        self.stats.items += len(items)
        self.stats.largest = max(self.stats.largest, len(items))
        start = 0
        for r in group:
            part = outputs[start : start + len(r.items)]
            start += len(r.items)
            if not r.future.done():
                r.future.set_result(part)
