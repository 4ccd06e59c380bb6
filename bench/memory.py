"""Memory over a run: resident set size and, on glibc, what malloc's heaps hold in use and free.

A peak alone cannot tell a leak (memory in use grows) from fragmentation (freed memory that the
heaps keep: it grows as "free" while "in use" stays flat). The sampler reads both every few
seconds from a daemon thread; the bench prints the samples after the run.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import resource
import threading
import time
from dataclasses import dataclass


def minor_page_faults() -> int:
    """Pages this process has touched for the first time (or again, after malloc gave them back)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def _mallinfo2():
    from pipeline.malloc import replacement_malloc

    if replacement_malloc():  # glibc's heaps are not the ones in use
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        function = libc.mallinfo2  # glibc 2.33 and later
    except (OSError, AttributeError):
        return None
    function.restype = _MallInfo2
    return function


@dataclass
class Sample:
    seconds: float
    rss_gb: float
    heap_in_use_gb: float | None  # malloc'd and not freed, all arenas (None where not glibc's malloc)
    heap_free_gb: float | None  # freed, but still held by the heaps


def resident_gb() -> float:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e9
    except OSError:  # not Linux
        return float("nan")


class MemorySampler:
    """``with MemorySampler(every_seconds) as sampler: ...``; then ``sampler.samples``."""

    def __init__(self, every_seconds: float):
        self.every_seconds = every_seconds
        self.samples: list[Sample] = []
        self._mallinfo2 = _mallinfo2()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-memory", daemon=True)

    def sample(self) -> Sample:
        info = self._mallinfo2() if self._mallinfo2 else None
        return Sample(time.perf_counter() - self._started, resident_gb(),
                      info.uordblks / 1e9 if info else None, info.fordblks / 1e9 if info else None)

    def _run(self) -> None:
        while not self._stop.wait(self.every_seconds):
            self.samples.append(self.sample())

    def __enter__(self) -> "MemorySampler":
        self._started = time.perf_counter()
        self.samples.append(self.sample())
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append(self.sample())

    def report(self) -> list[str]:
        lines = ["  memory over the run (GB): seconds, RSS, malloc heap in use, heap free"]
        for s in self.samples:
            heap = f"{s.heap_in_use_gb:6.3f} {s.heap_free_gb:6.3f}" if s.heap_in_use_gb is not None else "   n/a    n/a"
            lines.append(f"    {s.seconds:7.0f} {s.rss_gb:6.3f} {heap}")
        return lines
