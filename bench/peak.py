"""The machine's matmul throughput with torch's current threads, for a precision.

The peak a model's forward is measured against is the best GFLOP/s of several matmuls, over several
rounds: two squares (1024^3, 2048^3) and the encoder's own Linear shapes at 2,048 token rows
(:data:`PEAK_SHAPES`). One 2048^3 matmul, measured for 2 s, was the peak until 2026-12-03; on the
2-core AMX VM its bf16 reading swung from 633 to 1,678 GFLOP/s between rounds seconds apart, while
the encoder's 384 -> 384 shape reached 2,721 in the same minute: the lone square read low, and
shares of it read high (bench/RESULTS.md, "The peak, over more shapes").

``python -m bench.peak [--precision bf16] [--rounds 5]`` prints each shape's GFLOP/s round by round.
"""
from __future__ import annotations

import argparse
import contextlib
import time
from typing import Callable, Iterator, NamedTuple

import torch

# The default models' encoder (MiniLM: hidden 384, feed-forward 1,536), whose Linear layers are
# (tokens x 384) @ (384 x 1536), (tokens x 1536) @ (1536 x 384) and (tokens x 384) @ (384 x 384).
HIDDEN, INTERMEDIATE, TOKEN_ROWS = 384, 1536, 2048
PEAK_SHAPES: tuple[tuple[int, int, int], ...] = (
    (1024, 1024, 1024), (2048, 2048, 2048),
    (TOKEN_ROWS, HIDDEN, INTERMEDIATE), (TOKEN_ROWS, INTERMEDIATE, HIDDEN), (TOKEN_ROWS, HIDDEN, HIDDEN),
)
EMULATED_BF16_SHAPES = ((512, 512, 512),)  # bf16 without bf16 kernels (AVX2) is emulated and slow
PEAK_ROUNDS, SECONDS_PER_SHAPE = 3, 0.5


class Peak(NamedTuple):
    gflops: float
    shape: tuple[int, int, int]  # the (m, k, n) that reached it

    def describe(self) -> str:
        m, k, n = self.shape
        return f"{self.gflops:.1f} GFLOP/s ({m}x{k} @ {k}x{n})"


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


def peak_shapes(precision: str) -> tuple[tuple[int, int, int], ...]:
    from pipeline.models import cpu_has_bf16

    return EMULATED_BF16_SHAPES if precision == "bf16" and not cpu_has_bf16() else PEAK_SHAPES


def shape_gflops(precision: str, m: int, k: int, n: int, seconds: float = SECONDS_PER_SHAPE) -> float:
    """One (m x k) @ (k x n) in ``precision``: "fp32", "bf16" or "int8" (the pipeline's dynamic int8 Linear)."""
    if precision == "int8":
        return int8_dynamic_gflops(m, k, n, seconds)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]
    return matmul_gflops(dtype, m, k, n, seconds)


def rounds_of_shapes(precision: str, rounds: int = PEAK_ROUNDS) -> list[list[float]]:
    """GFLOP/s of each of :func:`peak_shapes`, round after round (a round runs every shape once)."""
    return [[shape_gflops(precision, *shape) for shape in peak_shapes(precision)] for _ in range(rounds)]


def measure_peak(precision: str, rounds: int = PEAK_ROUNDS) -> Peak:
    """The best of every shape in every round: the ceiling a model's Linear layers can reach in that
    precision. Rounds, because this VM's speed swung within seconds."""
    shapes = peak_shapes(precision)
    return max((Peak(gflops, shape) for row in rounds_of_shapes(precision, rounds) for gflops, shape in zip(row, shapes)),
               key=lambda peak: peak.gflops)


def peak_gflops(precision: str) -> float:
    return measure_peak(precision).gflops


def model_peak(peaks: dict[str, float], precision: str, int8_fraction: float = 1.0) -> float:
    """The peak a model's forward is measured against: that of its precision; for an int8 model whose
    Linear layers are only ``int8_fraction`` int8 (by weights; the rest fp32: models.INT8_KEEPS_FP32),
    the rate at which that mix of work would run, each part at its own peak."""
    if precision != "int8" or int8_fraction >= 1.0:
        return peaks[precision]
    return 1.0 / (int8_fraction / peaks["int8"] + (1.0 - int8_fraction) / peaks["fp32"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peak", description="Each peak shape's matmul GFLOP/s, round by round.")
    parser.add_argument("--precision", choices=("fp32", "bf16", "int8"), default="bf16")
    parser.add_argument("--rounds", type=int, default=5, help="rounds over all shapes (default: 5)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    shapes = peak_shapes(args.precision)
    names = [f"{m}x{k}x{n}" for m, k, n in shapes]
    print(f"{args.precision}, {torch.get_num_threads()} threads, GFLOP/s (m x k x n; best of {SECONDS_PER_SHAPE} s a shape):")
    print("round " + " ".join(f"{name:>15}" for name in names), flush=True)
    rows = []
    for round_ in range(args.rounds):
        row = rounds_of_shapes(args.precision, 1)[0]
        rows.append(row)
        print(f"{round_:5d} " + " ".join(f"{gflops:15.0f}" for gflops in row), flush=True)
    best = [max(column) for column in zip(*rows)]
    print(" best " + " ".join(f"{gflops:15.0f}" for gflops in best))
    top = max(range(len(shapes)), key=best.__getitem__)
    square = best[names.index("2048x2048x2048")] if "2048x2048x2048" in names else float("nan")
    print(f"precision={args.precision} peak_gflops={best[top]:.1f} peak_shape={names[top]} square_2048_gflops={square:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
