"""Python work in a child process at idle priority, on the cores the forward passes leave idle.

Torch's forward passes keep every core of the process busy; the Python between them (the quotes
stage, tokenizing, Beam) keeps one, and the others wait. A process at Linux's SCHED_IDLE priority
runs only on a core that nothing else wants, so work sent to it runs in that idle time and takes
none from the passes: a SCHED_IDLE process finding quotes in a loop beside `python -m bench` did
not slow its forwards (bench/RESULTS.md "Quotes beside the passes, at idle priority").

The child is a plain ``python -c`` process that imports one function and calls it on each request;
requests and answers are length-prefixed pickles over its stdin and stdout, answered in the order
sent. It is not a ``multiprocessing`` process, which would import the parent's ``__main__`` again
(a script without a main guard would start a second pipeline). Where the OS has no SCHED_IDLE
(macOS), or refuses it, the child runs at the lowest ``nice`` instead.
"""
from __future__ import annotations

import importlib
import logging
import os
import pickle
import queue
import resource
import signal
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from concurrent.futures import Future
from pathlib import Path

LOG = logging.getLogger(__name__)

ENV = "NEWS_PIPELINE_BESIDE"  # "0": never start the child; "1": start it even where it would not pay
_HEADER = struct.Struct("<Q")  # the length of the pickle after it


class BesideProcessError(RuntimeError):
    """The child process ended, or could not start: the caller does the work itself."""


class Stats:
    """What every child of this process did, for the benchmark: summed over children."""

    calls = 0
    cpu_s = 0.0  # the children's CPU time, none of it on the parent's wall unless a core was free
    peak_rss_bytes = 0  # the largest child's
    priority = ""  # how the last child lowered its priority

    @classmethod
    def reset(cls) -> None:
        cls.calls, cls.cpu_s, cls.peak_rss_bytes, cls.priority = 0, 0.0, 0, ""


def wanted(local: bool, torch_threads: int | None) -> bool:
    """Whether to run work beside the passes: on a local run whose torch uses two cores or more
    (one idles while the Python runs). On a cloud runner each core has a worker process of its own,
    so no core is left idle; ``NEWS_PIPELINE_BESIDE`` = 1 or 0 overrides."""
    choice = os.environ.get(ENV)
    if choice in ("0", "1"):
        return choice == "1"
    return local and (torch_threads or os.cpu_count() or 1) >= 2


class BesideProcess:
    """One child process at idle priority that calls ``target`` ("module:function") on what
    :meth:`submit` sends. Thread-safe; answers come back through futures, in the order sent.

    At most ``in_child`` requests are handed to the child at a time; the rest wait in this process,
    where a caller may take one back (``future.cancel()`` succeeds until it is handed over) and do
    it itself: at a bundle's end, or when the child gets no idle core, the caller need not wait."""

    def __init__(self, target: str, in_child: int = 8) -> None:
        module, _, function = target.partition(":")
        if not module or not function:
            raise ValueError(f"target must be 'module:function', got {target!r}")
        # the child finds this package where the parent found it, whatever the working directory
        root = str(Path(__file__).resolve().parent.parent)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
        code = f"from pipeline.beside import serve; serve({target!r})"
        self.target = target
        self._in_child_max = in_child
        self._process = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, env=env)
        # A writer thread hands requests over: a burst (NER hands over 64 articles at once) must not
        # wait on the pipe for the child to catch up.
        self._outbox: queue.SimpleQueue = queue.SimpleQueue()
        self._handed: deque[Future] = deque()  # handed to the child, answered in this order
        self._changed = threading.Condition()  # guards _handed, _closed, _closing; an answer or the end
        self._closed = False  # the child has ended
        self._closing = False  # close() was called: nothing more is taken
        name = function.strip("_")
        self._writer = threading.Thread(target=self._write_requests, name=f"beside-{name}-writer", daemon=True)
        self._reader = threading.Thread(target=self._read_answers, name=f"beside-{name}-reader", daemon=True)
        self._writer.start()
        self._reader.start()

    def submit(self, *args: object) -> Future:
        """Send a call; its future holds the function's result, or raises what it raised (as a
        RuntimeError naming the exception), or BesideProcessError if the child has ended."""
        future: Future = Future()
        with self._changed:  # queued before close()'s end marker, or refused
            if self._closing:
                future.set_exception(BesideProcessError(f"the process beside for {self.target} is closed"))
            else:
                self._outbox.put((future, args))
        return future

    def _write_requests(self) -> None:
        stdin = self._process.stdin
        while (item := self._outbox.get()) is not None:
            future, args = item
            with self._changed:
                self._changed.wait_for(lambda: self._closed or len(self._handed) < self._in_child_max)
                if not future.set_running_or_notify_cancel():
                    continue  # taken back by the caller
                if self._closed:
                    future.set_exception(BesideProcessError(f"the process beside for {self.target} has ended"))
                    continue
                self._handed.append(future)
            try:
                stdin.write(_HEADER.pack(len(payload := _encode(args))) + payload)
                stdin.flush()
            except OSError:
                pass  # the child has ended: the reader sees its output close and fails what it holds
        try:
            stdin.close()  # close() queued None: the child answers what it has, then exits
        except OSError:
            pass

    def _read_answers(self) -> None:
        stream = self._process.stdout
        while (answer := _read_message(stream)) is not None:
            ok, value, cpu_s, peak_rss, priority = answer
            Stats.calls += 1
            Stats.cpu_s += cpu_s
            Stats.peak_rss_bytes = max(Stats.peak_rss_bytes, peak_rss)
            Stats.priority = priority
            with self._changed:
                future = self._handed.popleft()
                self._changed.notify_all()
            if ok:
                future.set_result(value)
            else:
                future.set_exception(RuntimeError(value))
        with self._changed:
            self._closed = True
            handed, self._handed = list(self._handed), deque()
            self._changed.notify_all()
        if handed:
            LOG.warning("the process beside for %s ended (exit code %s) with %d calls unanswered; the caller does them",
                        self.target, self._process.poll(), len(handed))
        for future in handed:
            future.set_exception(BesideProcessError(f"the process beside for {self.target} ended"))

    def close(self, timeout_s: float = 10.0) -> None:
        """End the child once it has answered what was sent (it exits when its input closes)."""
        with self._changed:
            if not self._closing:
                self._closing = True
                self._outbox.put(None)  # after every request submitted; harmless if the writer has stopped
        self._writer.join(timeout_s)
        try:
            self._process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._reader.join(timeout_s)


def _read_message(stream) -> object | None:
    """The next message on ``stream``, None once it closes."""
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    body = stream.read(size)
    if len(body) < size:
        return None
    return _decode(body)


# Their own functions: the benchmark times them apart from waiting on the pipes.
def _encode(message: object) -> bytes:
    return pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)


def _decode(body: bytes) -> object:
    return pickle.loads(body)


def lower_priority() -> str:
    """Put this process at idle priority: SCHED_IDLE where the OS has it, else nice 19."""
    if hasattr(os, "sched_setscheduler") and hasattr(os, "SCHED_IDLE"):
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
            return "SCHED_IDLE"
        except OSError:
            pass
    try:
        os.nice(19 - os.nice(0))
        return "nice 19"
    except OSError:
        return "normal (could not lower it)"


def peak_rss_bytes() -> int:
    """This process's peak RSS. Linux's ru_maxrss carries over through exec, so a child started by a
    large parent would report the parent's; VmHWM starts again at exec."""
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def serve(target: str) -> None:
    """The child's loop: answer each request on stdin with (ok, result or error, CPU seconds so far,
    peak RSS in bytes, priority) on stdout, until stdin closes."""
    priority = lower_priority()  # first: the imports below run at idle priority too
    # Ctrl-C in a terminal reaches the whole process group: the parent handles it, and this process
    # ends when the parent closes its input (or exits), without a traceback of its own
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # a stray print must not corrupt the answers
    requests = sys.stdin.buffer
    module, _, function = target.partition(":")
    fn = getattr(importlib.import_module(module), function)
    cpu_before = time.process_time()
    while True:
        args = _read_message(requests)
        if args is None:
            return
        try:
            ok, value = True, fn(*args)
        except Exception as exc:  # sent back: the caller decides what a failure means
            ok, value = False, f"{type(exc).__name__}: {exc}"
        cpu_now = time.process_time()
        payload = _encode((ok, value, cpu_now - cpu_before, peak_rss_bytes(), priority))
        cpu_before = cpu_now
        answers.write(_HEADER.pack(len(payload)) + payload)
        answers.flush()
