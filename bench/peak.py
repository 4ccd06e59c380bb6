"""The machine's matmul throughput with torch's current threads, for a precision."""
from __future__ import annotations

import contextlib
import time
from typing import Callable, Iterator

import torch


def best_gflops(run: Callable[[], object], flops: float, seconds: float = 1.0) -> float:
    """Best GFLOP/s of ``run()`` (which does ``flops`` of work) over repeats for about ``seconds``."""
    with torch.inference_mode():
        run()  # warm-up
        best, spent = float("inf"), 0.0
        while spent < seconds:
            start = time.perf_counter()
            run()
            took = time.perf_counter() - start
            best, spent = min(best, took), spent + took
    return flops / best / 1e9


def matmul_gflops(dtype: torch.dtype, m: int, k: int, n: int, seconds: float = 1.0) -> float:
    """(m x k) @ (k x n) in ``dtype``, into one preallocated output: the peak measures the multiply,
    not malloc (a fresh 16 MB output under the pipeline's glibc settings is mapped and faulted in
    each time; bf16 read 1,102 GFLOP/s that way and 2,236 under tcmalloc on the same AMX VM)."""
    a = torch.randn(m, k).to(dtype)
    b = torch.randn(k, n).to(dtype)
    out = torch.empty(m, n, dtype=dtype)
    return best_gflops(lambda: torch.matmul(a, b, out=out), 2.0 * m * k * n, seconds)


def int8_dynamic_gflops(m: int, k: int, n: int, seconds: float = 1.0) -> float:
    """An int8 dynamic-quantized Linear (k -> n, per-channel weights, as the pipeline's int8 models
    run) over an (m x k) fp32 input, activation quantization included."""
    from pipeline.int8 import quantized

    # no input scales: the peak is the bare int8 GEMM (the models' smoothing adds one multiply)
    layer = quantized(torch.nn.Sequential(torch.nn.Linear(k, n, bias=False)), None)
    x = torch.randn(m, k)
    with heap_kept():  # the quantized Linear allocates its output: keep it in the heap, as above
        return best_gflops(lambda: layer(x), 2.0 * m * k * n, seconds)


@contextlib.contextmanager
def heap_kept() -> Iterator[None]:
    """While measuring a peak, glibc serves blocks up to 32 MiB from its heap (reused, no page
    faults), then the pipeline's threshold is put back. Does nothing where the pipeline's settings
    are not in force (another malloc preloaded, the user's own tunables, not glibc)."""
    from pipeline import malloc

    libc = malloc.glibc()
    if libc is None or not malloc.tune_malloc():
        yield
        return
    libc.mallopt(malloc.M_MMAP_THRESHOLD, 32 << 20)  # glibc's largest allowed threshold on 64-bit
    try:
        yield
    finally:
        libc.mallopt(malloc.M_MMAP_THRESHOLD, malloc.MMAP_THRESHOLD_BYTES)


def peak_size(precision: str) -> int:
    """The square matmul's side: 2048, or 512 for bf16 without bf16 kernels (AVX2: emulated, slow)."""
    from pipeline.models import cpu_has_bf16

    return 512 if precision == "bf16" and not cpu_has_bf16() else 2048


def peak_gflops(precision: str) -> float:
    """Large square matmuls: the ceiling a model's linear layers can reach in that precision."""
    size = peak_size(precision)
    if precision == "int8":
        return max(int8_dynamic_gflops(size, size, size) for _ in range(2))
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]
    return max(matmul_gflops(dtype, size, size, size) for _ in range(2))


def model_peak(peaks: dict[str, float], precision: str, int8_fraction: float = 1.0) -> float:
    """The peak a model's forward is measured against: that of its precision; for an int8 model whose
    Linear layers are only ``int8_fraction`` int8 (by weights; the rest fp32: models.INT8_KEEPS_FP32),
    the rate at which that mix of work would run, each part at its own peak."""
    if precision != "int8" or int8_fraction >= 1.0:
        return peaks[precision]
    return 1.0 / (int8_fraction / peaks["int8"] + (1.0 - int8_fraction) / peaks["fp32"])
