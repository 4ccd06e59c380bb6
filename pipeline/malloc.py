"""Which malloc the pipeline runs on, and glibc's settings when it is glibc's.

Imports nothing heavy (no torch), so that ``python -m pipeline`` and ``python -m bench`` can call
:func:`reexec_with_tcmalloc` before any work starts.

tcmalloc is the malloc the project recommends, and the Docker image preloads it: the models'
activation tensors, a few MiB each and a new size with every batch, are what glibc's malloc
handles worst. On a 2-core AMX VM, 300 articles with bf16 models ran at 14.2 articles/s with
tcmalloc and 12.2 with glibc and the settings below (606 against 7,147 page faults per forward
call); on an AVX2 VM with int8/fp32 models, 3.17 against 3.07 articles/s at N=1,000 with a lower,
flat RSS (bench/RESULTS.md, "tcmalloc").
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
import re
import sys
from pathlib import Path

LOG = logging.getLogger(__name__)

# glibc's malloc raises its mmap threshold (up to 32 MiB) each time a large block is freed, so the
# models' activation tensors, a few MiB each, soon come from the heap; small long-lived objects
# (rows, texts, Beam's buffers) allocated between them keep the heap from shrinking, and RSS grew
# with the number of articles (bench/RESULTS.md, Memory). A fixed threshold sends blocks of 4 MiB
# and more to mmap, which hands them back to the OS when freed. `python -m bench --memory-every` at
# N=1,000: with 8 MiB the heap's free memory grew to 0.31 GB while the memory in use stayed at
# 0.22 GB (peak RSS 1.22 GB); with 4 MiB it stayed under 0.20 GB (1.12 GB); 2 and 1 MiB were slower.
# At N=10,000 with 4 MiB, RSS levelled off at 1.23 GB after half an hour (peak 1.37).
# But fixing the mmap threshold also fixes the trim threshold at its 128 KiB default: every free at
# the heap's top gave the pages back and the next pass faulted them in again: 8,630 page faults per
# int8 NER pass of 16 windows (`MALLOC_MMAP_THRESHOLD_=4194304 python -m bench.forward`), and at
# N=1,000 the NER forward took 208 s against 171 s with glibc's defaults (bench/RESULTS.md, "Page
# faults"). The trim threshold is therefore raised too: the heap keeps up to 32 MiB free at its top.
MMAP_THRESHOLD_BYTES = 4 << 20
TRIM_THRESHOLD_BYTES = 32 << 20
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameter numbers, from glibc's malloc.h
_MALLOC_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")


@functools.cache
def glibc() -> ctypes.CDLL | None:
    """This process's C library when it is glibc (not macOS's or musl's), else None."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    needed = ("mallopt", "gnu_get_libc_version")
    return libc if all(hasattr(libc, name) for name in needed) else None


# A malloc that replaces glibc's when preloaded (LD_PRELOAD); glibc's thresholds then do not apply.
# tcmalloc is the one the project recommends and the image preloads: at N=1,000 it ran as fast as
# the glibc settings below or faster, with RSS flat and lower (README "Running it", bench/RESULTS.md "tcmalloc").
_REPLACEMENT_MALLOC = re.compile(r"/lib(tcmalloc|jemalloc)[^/\s]*\.so")


def allocator_in(maps: str) -> str | None:
    """"tcmalloc" or "jemalloc" when a process's memory map (the text of /proc/PID/maps) has it loaded, else None."""
    found = _REPLACEMENT_MALLOC.search(maps)
    return found.group(1) if found else None


@functools.cache
def replacement_malloc() -> str | None:
    """The malloc replacement loaded in this process ("tcmalloc", "jemalloc"), None for the libc's own."""
    try:
        return allocator_in(Path("/proc/self/maps").read_text())
    except OSError:  # not Linux
        return None


@functools.cache
def tune_malloc(mmap_threshold: int = MMAP_THRESHOLD_BYTES, trim_threshold: int = TRIM_THRESHOLD_BYTES) -> bool:
    """Fix glibc's mmap and trim thresholds for this process; False (and nothing done) on a libc
    other than glibc (macOS, musl), when another malloc is preloaded, or when the user set
    malloc's tunables in the environment."""
    if any(name in os.environ for name in _MALLOC_ENV):
        return False
    preloaded = replacement_malloc()
    if preloaded:
        LOG.info("malloc: %s is preloaded; glibc's thresholds are left alone", preloaded)
        return False
    libc = glibc()
    return bool(libc and libc.mallopt(M_MMAP_THRESHOLD, mmap_threshold) and libc.mallopt(M_TRIM_THRESHOLD, trim_threshold))




def describe() -> str:
    """Which malloc this process runs on, with which settings (logged by the CLI, printed by the bench)."""
    if replacement_malloc():
        return f"{replacement_malloc()} (preloaded)"
    if tune_malloc():
        return (f"glibc, mmap threshold {MMAP_THRESHOLD_BYTES >> 20} MiB, trim threshold {TRIM_THRESHOLD_BYTES >> 20} MiB "
                "(pipeline.malloc.tune_malloc)")
    return "the C library's, as the environment sets it"


# "glibc": keep the C library's malloc (no re-exec). The re-exec sets "tcmalloc", so it happens once.
MALLOC_CHOICE_ENV = "NEWS_PIPELINE_MALLOC"


def tcmalloc_library() -> str | None:
    """The name the dynamic loader knows an installed tcmalloc by (libtcmalloc_minimal.so.4), else None."""
    if not sys.platform.startswith("linux"):
        return None
    return ctypes.util.find_library("tcmalloc_minimal") or ctypes.util.find_library("tcmalloc")


def reexec_with_tcmalloc() -> None:
    """Start this Python command again, in this process, with tcmalloc preloaded (``LD_PRELOAD``).

    Called first thing by ``python -m pipeline`` and ``python -m bench``. Returns, and the command
    goes on with the malloc it has, when tcmalloc is not installed, when another malloc is already
    loaded, when ``LD_PRELOAD`` is set (the user's own), or when ``NEWS_PIPELINE_MALLOC`` is set
    (``glibc`` opts out). A malloc can only be replaced before the process starts, hence the exec."""
    if os.environ.get(MALLOC_CHOICE_ENV) or os.environ.get("LD_PRELOAD") or replacement_malloc():
        return
    library = tcmalloc_library()
    if not library:
        return
    env = {**os.environ, "LD_PRELOAD": library, MALLOC_CHOICE_ENV: "tcmalloc"}
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, sys.orig_argv, env)  # orig_argv keeps the interpreter's own options (-u, -X ...)
    except OSError as exc:
        LOG.warning("malloc: could not start again with %s preloaded (%s); going on with glibc's", library, exc)
