"""Memory over a run: resident set size and what malloc holds in use and free (glibc or tcmalloc).

A peak alone cannot tell a leak (memory in use grows) from fragmentation (freed memory that the
heaps keep: it grows as "free" while "in use" stays flat). The sampler reads both every few
seconds from a daemon thread; the bench prints the samples after the run.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import resource
import threading
import time
from dataclasses import dataclass
from typing import Callable


def minor_page_faults() -> int:
    """Pages this process has touched for the first time (or again, after malloc gave them back)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def _glibc_heap() -> Callable[[], tuple[int, int]] | None:
    """(in use, free) bytes of glibc's heaps, all arenas, from mallinfo2 (glibc 2.33 and later)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallinfo2 = libc.mallinfo2
    except (OSError, AttributeError):
        return None
    mallinfo2.restype = _MallInfo2

    def read() -> tuple[int, int]:
        info = mallinfo2()
        return info.uordblks, info.fordblks

    return read


# tcmalloc's counters (gperftools' MallocExtension): freed memory it keeps in its caches and page
# heap counts as free; what it has given back to the OS ("unmapped") is not in RSS and not counted.
_TCMALLOC_FREE = ("tcmalloc.pageheap_free_bytes", "tcmalloc.central_cache_free_bytes",
                  "tcmalloc.transfer_cache_free_bytes", "tcmalloc.thread_cache_free_bytes")


def _tcmalloc_heap() -> Callable[[], tuple[int, int]] | None:
    """(in use, free) bytes of a preloaded tcmalloc, from MallocExtension_GetNumericProperty."""
    try:
        get = ctypes.CDLL(None).MallocExtension_GetNumericProperty  # the preloaded library's symbols are global
    except (OSError, AttributeError):
        return None
    get.argtypes, get.restype = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_size_t)], ctypes.c_int

    def value(name: str) -> int:
        out = ctypes.c_size_t(0)
        return out.value if get(name.encode(), ctypes.byref(out)) else 0

    return lambda: (value("generic.current_allocated_bytes"), sum(value(name) for name in _TCMALLOC_FREE))


def heap_reader() -> Callable[[], tuple[int, int]] | None:
    """A function giving the malloc heap's (in use, free) bytes, for glibc's malloc or a preloaded
    tcmalloc; None for others (jemalloc, macOS)."""
    from pipeline.malloc import replacement_malloc

    chosen = replacement_malloc()
    if chosen == "tcmalloc":
        return _tcmalloc_heap()
    return None if chosen else _glibc_heap()


@dataclass
class Sample:
    seconds: float
    rss_gb: float
    heap_in_use_gb: float | None  # malloc'd and not freed (None where the malloc cannot tell: jemalloc, macOS)
    heap_free_gb: float | None  # freed, but still held by malloc (glibc's heaps, tcmalloc's caches and page heap)


def resident_gb() -> float:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e9
    except OSError:  # not Linux
        return float("nan")


class MemorySampler:
    """``with MemorySampler(every_seconds) as sampler: ...``; then ``sampler.samples``.
    ``on_sample`` is called with each sample taken during the run (progress lines)."""

    def __init__(self, every_seconds: float, on_sample: Callable[[Sample], None] | None = None):
        self.every_seconds = every_seconds
        self.on_sample = on_sample
        self.samples: list[Sample] = []
        self._heap = heap_reader()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-memory", daemon=True)

    def sample(self) -> Sample:
        in_use, free = self._heap() if self._heap else (None, None)
        return Sample(time.perf_counter() - self._started, resident_gb(),
                      in_use / 1e9 if self._heap else None, free / 1e9 if self._heap else None)

    def _run(self) -> None:
        while not self._stop.wait(self.every_seconds):
            self.samples.append(self.sample())
            if self.on_sample is not None:
                self.on_sample(self.samples[-1])

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


class CollectorTime:
    """``with CollectorTime() as collector: ...``: how often Python's cyclic garbage collector ran
    and for how long (``gc.callbacks``), full collections (generation 2) apart from young ones.
    Its time is spent inside whichever stage allocated when it struck."""

    def __init__(self) -> None:
        self.full: list[float] = []  # seconds of each full collection
        self.young_count, self.young_s = 0, 0.0
        self.frozen = 0
        self._started = 0.0

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        took = time.perf_counter() - self._started
        if info["generation"] == 2:
            self.full.append(took)
        else:
            self.young_count, self.young_s = self.young_count + 1, self.young_s + took

    def __enter__(self) -> "CollectorTime":
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc) -> None:
        gc.callbacks.remove(self._callback)
        self.frozen = gc.get_freeze_count()  # objects full collections skip (models.freeze_loaded_objects)

    def report(self) -> str:
        full = ", ".join(f"{took:.2f}" for took in self.full) or "none"
        return (f"  garbage collector {sum(self.full) + self.young_s:.2f} s, inside the stages above: "
                f"{len(self.full)} full collections (s: {full}), {self.young_count:,} young ({self.young_s:.2f} s); "
                f"{self.frozen:,} objects frozen")
