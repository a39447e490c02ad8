"""The receiver's landing writer: one thread storing queued deliveries in group commits.

Request handlers hand records to the writer, which stores everything queued in one transaction
and one fsync, then wakes every waiting handler. A group that fails is retried record by record,
so one record that cannot be stored fails alone. The writer remembers its last outcome and
probes the file when asked and idle (`health`): `/healthz` says whether an event could be stored
now. The store itself (file, schema, reading) is `cdr_pipeline.landing`, re-exported here.
"""

import concurrent.futures
import logging
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from cdr_pipeline.landing import (
    LandingRecord,
    LandingStore,
    Stored,
    open_reader,
)

__all__ = ["LandingWriter", "WriterHealth"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WriterHealth:
    """Whether the writer could store an event just now: None, or why not."""

    error: str | None
    at: float  # time.monotonic() of the outcome


class LandingWriter:
    """The receiver's single writer thread, committing queued records in groups.

    `submit` returns a future that resolves to a `Stored` once the record's transaction has
    committed (fsync'd), or fails with the storage error: the handler acknowledges only then.
    """

    _STOP = object()
    _PROBE = object()

    def __init__(self, path: Path, *, max_group: int = 512) -> None:
        self.path = path
        self._store = LandingStore(path)
        self.store_id = self._store.store_id
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._max_group = max_group
        self.groups_committed = 0
        self._last = WriterHealth(None, time.monotonic())
        self._thread = threading.Thread(target=self._run, name="landing-writer", daemon=True)
        self._thread.start()

    def submit(self, record: LandingRecord) -> "concurrent.futures.Future[Stored]":
        future: concurrent.futures.Future[Stored] = concurrent.futures.Future()
        if not self._thread.is_alive():
            future.set_exception(RuntimeError("the landing writer has stopped"))
            return future
        self._queue.put((record, future))
        return future

    def health(self, max_age_s: float = 1.0) -> "concurrent.futures.Future[WriterHealth]":
        """The last write's outcome if younger than `max_age_s`, else a probe's (one small
        fsync'd write, queued behind the events): at most one probe per `max_age_s`."""
        future: concurrent.futures.Future[WriterHealth] = concurrent.futures.Future()
        if not self._thread.is_alive():
            future.set_result(WriterHealth("the landing writer has stopped", time.monotonic()))
        elif time.monotonic() - self._last.at < max_age_s:
            future.set_result(self._last)
        else:
            self._queue.put((self._PROBE, future))
        return future

    def max_seq(self) -> int:
        with open_reader(self.path) as reader:
            return reader.max_seq() if reader else 0

    def close(self) -> None:
        """Commit what is queued, then stop the thread and close the file."""
        if self._thread.is_alive():
            self._queue.put(self._STOP)
            self._thread.join()
        self._store.close()

    def _run(self) -> None:
        stopping = False
        while not stopping:
            group = [self._queue.get()]
            while len(group) < self._max_group:
                try:
                    group.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if self._STOP in group:
                stopping = True
                group = [item for item in group if item is not self._STOP]
            probes = [future for record, future in group if record is self._PROBE]
            records = [(record, future) for record, future in group if record is not self._PROBE]
            if records:
                self._commit(records)
            if probes:
                self._probe(probes)

    def _commit(self, group: list) -> None:
        records = [record for record, _ in group]
        try:
            outcomes = self._store.append(records)
        except Exception as error:
            self._last = WriterHealth(_describe(error), time.monotonic())
            if len(group) > 1:
                # One record that cannot be stored must not fail the others: retry one by one.
                # (When the disk is full each fails again, at once.)
                failed = [self._commit_one(item) for item in group].count(False)
                log.error(
                    "landing store %s: a group of %d events failed (%s); one by one, %d failed",
                    self.path,
                    len(group),
                    _describe(error),
                    failed,
                )
            else:
                log.error("landing store %s: could not commit an event: %s", self.path, error)
                group[0][1].set_exception(error)
            return
        self._succeeded()
        for (_, future), outcome in zip(group, outcomes, strict=True):
            future.set_result(outcome)

    def _commit_one(self, item: tuple) -> bool:
        record, future = item
        try:
            (outcome,) = self._store.append([record])
        except Exception as error:
            self._last = WriterHealth(_describe(error), time.monotonic())
            future.set_exception(error)
            return False
        self._succeeded()
        future.set_result(outcome)
        return True

    def _probe(self, futures: list) -> None:
        try:
            self._store.probe()
        except Exception as error:
            self._last = WriterHealth(_describe(error), time.monotonic())
            log.error("landing store %s: not writable: %s", self.path, error)
        else:
            self._succeeded()
        for future in futures:
            future.set_result(self._last)

    def _succeeded(self) -> None:
        self.groups_committed += 1
        self._last = WriterHealth(None, time.monotonic())


def _describe(error: Exception) -> str:
    return f"{type(error).__name__}: {str(error)[:200]}"
