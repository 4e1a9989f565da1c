"""Searches that arrive together run together: one text-encoder batch and one scoring pass for all of them.

Under load, queries queue while a search runs; the next free worker takes every waiting query with the same options
(up to `max_batch`) and answers them with one `SearchIndex.search` call. A query's results are those it gets alone:
the index scores each query's own shortlist, whichever queries keep it company.
"""

import threading
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field

from tcmgc_cli.errors import TcmgcError
from tcmgc_cli.search import Hit, SearchIndex
from tcmgc_cli.serve.live import LiveIndex


@dataclass
class _Job:
    query: str
    top_k: int
    per_video: int
    result: "Future[list[Hit]]" = field(default_factory=Future)

    @property
    def options(self) -> tuple[int, int]:
        return self.top_k, self.per_video


class SearchBatcher:
    """`workers` threads answering queued queries in batches; each holds one of `slots` while it computes (the
    slots it shares with other work on the index, such as word attention)."""

    def __init__(
        self, index: "SearchIndex | LiveIndex", slots: threading.BoundedSemaphore, workers: int = 1, max_batch: int = 16
    ) -> None:
        self.source, self.slots, self.max_batch = index, slots, max_batch
        self._queue: deque[_Job] = deque()
        self._ready = threading.Condition()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._work, daemon=True, name=f"tcmgc-search-{n}") for n in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, query: str, top_k: int = 10, per_video: int = 1) -> "Future[list[Hit]]":
        """The hits of one query, when a worker has run it (TcmgcError for a query the index refuses)."""
        job = _Job(query, top_k, per_video)
        with self._ready:
            if self._closed:
                raise RuntimeError("the search batcher is closed")
            self._queue.append(job)
            self._ready.notify()
        return job.result

    def close(self) -> None:
        """Stop the workers once the queue is empty."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()
        for thread in self._threads:
            thread.join()

    def _wait(self) -> bool:
        """Block until a query waits (True) or the batcher is closed with none left (False)."""
        with self._ready:
            while not self._queue and not self._closed:
                self._ready.wait()
            return bool(self._queue)

    def _take(self) -> list[_Job]:
        """The oldest waiting query and every other one with its options, up to max_batch (none if another worker
        was first). A query whose caller gave up (its future cancelled) is dropped; the others are marked running,
        so that they can no longer be cancelled."""
        with self._ready:
            batch, others = list[_Job](), list[_Job]()
            while self._queue and len(batch) < self.max_batch:
                job = self._queue.popleft()
                if batch and job.options != batch[0].options:
                    others.append(job)
                elif job.result.set_running_or_notify_cancel():
                    batch.append(job)
            self._queue.extendleft(reversed(others))  # back at the front, in their order
            return batch

    def _work(self) -> None:
        while self._wait():
            with self.slots:  # the batch is formed once a slot is free: it takes everything that queued meanwhile
                batch = self._take()
                if batch:
                    self._run(batch)

    def _run(self, batch: list[_Job]) -> None:
        top_k, per_video = batch[0].options
        try:
            index = self.source.current if isinstance(self.source, LiveIndex) else self.source  # the newest
            hits = index.search([j.query for j in batch], top_k, per_video=per_video)[0]
        except TcmgcError as err:
            if len(batch) > 1:  # one query's fault must not fail the others: each alone
                for job in batch:
                    self._run([job])
                return
            batch[0].result.set_exception(err)
        except Exception as err:  # an answer (a 500) for every request, and the worker lives on
            for job in batch:
                job.result.set_exception(err)
        else:
            for job, found in zip(batch, hits, strict=True):
                job.result.set_result(found)
