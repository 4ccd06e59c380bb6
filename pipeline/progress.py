"""Progress on long runs: every PROGRESS_EVERY_SECS a worker logs how many articles have gone
through it and how fast, e.g.

    progress: 1,280 articles through NER, 1,024 written, in 4 min 06 s (5.20 articles/s through NER; 5.31/s over the last 30 s)

A 10,000-article run takes half an hour on 2 cores; without this it is silent until its summary
line. Local runs only (``options.runs_locally``): a cloud runner's workers would each add a line
to its logs every 30 s, and its own counters (the pipeline's Beam metrics) show progress there.
One count per worker process: the threads of a process add to the same count, and each process
of the local multi-process mode logs its own (their sum is the run's progress)."""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

LOG = logging.getLogger(__name__)

PROGRESS_EVERY_SECS = 30.0


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


class ProgressLog:
    """Counts articles through NER and written (rows made); on the first count after ``every_secs``
    since the last line, emits one. Both counts, because the stance stage holds articles back in
    batches of 256 (``--stance_batch_size``): written articles arrive in bursts, NER's in batches of 64."""

    def __init__(self, every_secs: float | None = None, clock: Callable[[], float] = time.monotonic,
                 emit: Callable[[str], None] = LOG.info) -> None:
        self._every = PROGRESS_EVERY_SECS if every_secs is None else every_secs
        self._clock, self._emit = clock, emit
        self._lock = threading.Lock()
        self._started = self._last_at = clock()
        self._ner = self._written = self._last_ner = 0

    def through_ner(self, articles: int = 1) -> None:
        self._add(articles, 0)

    def written(self, articles: int = 1) -> None:
        self._add(0, articles)

    def _add(self, ner: int, written: int) -> None:
        with self._lock:
            self._ner += ner
            self._written += written
            now = self._clock()
            if now - self._last_at < self._every:
                return
            elapsed, recent = max(now - self._started, 1e-9), max(now - self._last_at, 1e-9)
            line = (f"progress: {self._ner:,} article{'s' if self._ner != 1 else ''} through NER, {self._written:,} written, "
                    f"in {_duration(elapsed)} ({self._ner / elapsed:.2f} articles/s through NER; "
                    f"{(self._ner - self._last_ner) / recent:.2f}/s over the last {recent:.0f} s)")
            self._last_at, self._last_ner = now, self._ner
        self._emit(line)


_PROCESS_LOG: ProgressLog | None = None
_PROCESS_LOCK = threading.Lock()


def new_run() -> None:
    """Start the counts again: ``run`` and ``watch`` call it, since the in-process runner's workers
    share the process that may have run a pipeline before (a notebook, the tests)."""
    global _PROCESS_LOG
    with _PROCESS_LOCK:
        _PROCESS_LOG = None


def process_progress() -> ProgressLog:
    """This process's ProgressLog, started by the first DoFn that asks (at worker start-up)."""
    global _PROCESS_LOG
    with _PROCESS_LOCK:
        if _PROCESS_LOG is None:
            _PROCESS_LOG = ProgressLog()
        return _PROCESS_LOG
