"""The pipeline's forward passes called from the main thread, against from a thread started after
them, as a runner's bundle threads are: Dataflow's and Flink's SDK harness process bundles on a pool
of threads, the DirectRunner (``python -m bench``) on the main thread.

Run from the repository root: ``python -m bench.bundle_thread --corpus ../shared/data/polnear/train/text
[--articles 100] [--rounds 5]``.

Both models as the pipeline loads them (precision ``auto``). The passes run once from the main
thread first, so that everything the first call sets up (the side-by-side pool, passes.run_passes)
exists before the other thread starts; then alternating timed rounds. Before passes._pass_pool put
the process's torch thread count back, a thread started later ran torch on one thread.

The last line: ``bundle_thread_torch_threads=… main_torch_threads=… ner_thread_speed_median=…
stance_thread_speed_median=…`` (speed: main-thread seconds over bundle-thread seconds; 1.0 is as fast).
"""
from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import torch

from bench.packed import arguments, ner_windows, stance_inputs
from pipeline import models, ner, stance
from pipeline.evaluate import corpus_texts


def main(argv: list[str] | None = None) -> int:
    names = ("main_thread", "bundle_thread")
    args = arguments("python -m bench.bundle_thread", __doc__.split("\n\n")[0], names, argv)
    texts = corpus_texts(args.corpus, args.articles)
    ner_model, stance_model = models.load_model("ner", None), models.load_model("stance", None)
    runs = (("ner", ner_model, ner.forward, ner_windows(ner_model, texts)),
            ("stance", stance_model, stance.forward, stance_inputs(stance_model, texts)))
    for _, model, forward, data in runs:
        forward(model, data)  # from the main thread first: the pool (if any) starts here
    bundle_thread = ThreadPoolExecutor(1, thread_name_prefix="bundle")  # its thread starts on the first submit
    bundle_threads = bundle_thread.submit(torch.get_num_threads).result()
    print(f"{len(texts)} articles; ner {ner_model.precision}, stance {stance_model.precision}, side by side: "
          f"{ner_model.side_by_side}; torch threads: main thread {torch.get_num_threads()}, bundle thread {bundle_threads}")

    def timed(forward, model, data) -> float:
        started = time.perf_counter()
        forward(model, data)
        return time.perf_counter() - started

    speeds: dict[str, list[float]] = {"ner": [], "stance": []}
    for round_ in range(args.rounds):
        line = f"round {round_}:"
        for name, model, forward, data in runs:
            main_s = timed(forward, model, data)
            thread_s = bundle_thread.submit(timed, forward, model, data).result()
            speeds[name].append(main_s / thread_s)
            line += f"  {name} main thread {main_s:.2f} s, bundle thread {thread_s:.2f} s ({main_s / thread_s:.2f}x)"
        print(line, flush=True)
    bundle_thread.shutdown()
    print(f"bundle_thread_torch_threads={bundle_threads} main_torch_threads={torch.get_num_threads()} "
          f"ner_thread_speed_median={statistics.median(speeds['ner']):.3f} "
          f"stance_thread_speed_median={statistics.median(speeds['stance']):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
