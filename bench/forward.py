"""Which precision runs the default models fastest on this machine: forward passes alone, no Beam.

Run from the repository root: ``python -m bench.forward [--threads 2] [--seconds 2]``.

For each precision (fp32, int8, and bf16 where oneDNN has bf16 kernels, or with ``--all``) it times
``LoadedModel.forward`` (what the pipeline calls) on batches of the shapes the pipeline and the
naive loop run, and prints tokens/s, GFLOP/s and the share of the machine's matmul peak in that
precision (``bench/peak.py``; the stance model's int8, whose feed-forward output layers stay fp32,
against the blend of the int8 and fp32 peaks, ``bench.peak.model_peak``). Shapes: in the first 200
PolNeAR train texts, NER windows (one per sentence) average 22 tokens and stance texts 24, so the pipeline's passes are 16 windows x 24
tokens (NER) and 16 texts x 24 tokens (stance) in fp32 and int8, 64 rows a pass in bf16
(``pipeline.passes.INNER_BATCH_SIZE``; ``--rows`` times other sizes too); the naive loop runs one
article at a time through the token-classification pipeline (512-token windows) and one quote at a
time (1 x 24).

``--random-weights`` builds the default models' architecture (MiniLM-L6: 6 layers, hidden 384) with
untrained weights, for a machine without the project installed (the pip-shipped encoder is 91 MB):
the time of a forward pass does not depend on the weights' values. Its outputs mean nothing.

Each line also gives the minor page faults of a pass: memory that malloc handed back to the OS
and the pass touched again (``MALLOC_MMAP_THRESHOLD_=4194304 python -m bench.forward`` shows what the
mmap threshold alone, without the trim threshold, costs; bench/RESULTS.md "Page faults").

The last line, for the precision ``auto`` picks on this machine (the pipeline's default):
``ner_auto=… ner_tokens_per_s=… ner_vs_fp32=… ner_vs_naive=… stance_auto=… …``, where ``vs_fp32`` is
against fp32 in the same batches and ``vs_naive`` against the naive loop's fp32 passes.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import torch

# tokens in a row of one forward pass (see the module docstring); the pipeline's rows a pass come
# from pipeline.passes.INNER_BATCH_SIZE, the naive loop's are 1
PIPELINE_TOKENS = {"ner": 24, "stance": 24}
NAIVE_TOKENS = {"ner": 512, "stance": 24}
# the default models' architecture (sentence-transformers/all-MiniLM-L6-v2) and heads
MINILM_L6 = dict(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                 intermediate_size=1536, max_position_embeddings=512)
NUM_LABELS = {"ner": 9, "stance": 3}


@dataclass
class Timing:
    task: str
    shape_name: str
    precision: str
    rows: int
    tokens: int
    seconds_per_pass: float
    faults_per_pass: float
    gflops: float
    peak_gflops: float
    peak_name: str  # the precision, or "int8+fp32" for an int8 model with fp32 layers (bench.peak.model_peak)

    @property
    def tokens_per_s(self) -> float:
        return self.rows * self.tokens / self.seconds_per_pass

    def line(self) -> str:
        return (f"{self.task:6s} {self.shape_name:10s} {self.rows:3d} x {self.tokens:3d}  {self.precision:4s}  "
                f"{self.tokens_per_s:9.0f} tokens/s  {self.gflops:7.1f} GFLOP/s  "
                f"{100 * self.gflops / self.peak_gflops:4.0f} % of the {self.peak_name} peak ({self.peak_gflops:.0f})  "
                f"{self.faults_per_pass:6.0f} page faults/pass")


def random_weight_model(task: str):
    """The default model's architecture, untrained (see the module docstring)."""
    from torch import nn
    from transformers import BertConfig, BertForSequenceClassification, BertForTokenClassification

    from pipeline.models import CASE_CLASSES, LoadedModel

    torch.manual_seed(0)
    config = BertConfig(**MINILM_L6, num_labels=NUM_LABELS[task])
    model_class = BertForTokenClassification if task == "ner" else BertForSequenceClassification
    model = model_class(config).eval()
    case_embeddings = nn.Embedding(len(CASE_CLASSES), config.hidden_size) if task == "ner" else None
    return LoadedModel(task, f"{task}-random-weights", None, model, [str(i) for i in range(NUM_LABELS[task])],
                       case_embeddings)


def time_forward(loaded, rows: int, tokens: int, seconds: float) -> tuple[float, float]:
    """Median seconds of one forward pass over a (rows x tokens) batch of real-looking ids, and the
    mean minor page faults of a pass (memory malloc gave back and the pass touched again)."""
    from bench.memory import minor_page_faults

    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(1000, 30000, (rows, tokens), generator=generator)
    mask = torch.ones(rows, tokens, dtype=torch.long)
    case_ids = torch.zeros(rows, tokens, dtype=torch.long) if loaded.case_embeddings is not None else None
    times: list[float] = []
    with torch.inference_mode():
        loaded.forward(input_ids, mask, case_ids)  # warm-up: oneDNN picks and caches its kernels
        faults_before = minor_page_faults()
        while sum(times) < seconds or len(times) < 5:
            start = time.perf_counter()
            loaded.forward(input_ids, mask, case_ids)
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2], (minor_page_faults() - faults_before) / len(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.forward", description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    parser.add_argument("--seconds", type=float, default=2.0, help="time spent on each shape and precision")
    parser.add_argument("--all", action="store_true", help="time bf16 even where it is emulated (slow)")
    parser.add_argument("--random-weights", action="store_true", help="untrained weights of the same architecture")
    parser.add_argument("--rows", type=int, nargs="*", default=[], help="also time the pipeline's passes with these rows")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from bench.instrument import model_flops
    from bench.peak import model_peak, peak_gflops
    from pipeline.int8 import int8_fraction
    from pipeline import malloc
    from pipeline.models import cpu_has_bf16, load_model, resolve_precision, with_precision
    from pipeline.passes import INNER_BATCH_SIZE

    precisions = ["fp32", "int8"] + (["bf16"] if args.all or cpu_has_bf16() else [])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, oneDNN bf16 kernels: {cpu_has_bf16()}, "
          f"weights: {'random' if args.random_weights else 'the default models'}, malloc: {malloc.describe()}")
    peaks = {precision: peak_gflops(precision) for precision in precisions}
    timings: list[Timing] = []
    for task in PIPELINE_TOKENS:
        fp32 = random_weight_model(task) if args.random_weights else load_model(task, None, "fp32")
        for precision in precisions:
            loaded = with_precision(fp32, precision)
            default_rows = INNER_BATCH_SIZE[task][precision]
            shapes = [("pipeline", default_rows, PIPELINE_TOKENS[task])]
            shapes += [(f"rows={rows}", rows, PIPELINE_TOKENS[task]) for rows in args.rows if rows != default_rows]
            shapes += [("naive loop", 1, NAIVE_TOKENS[task])]
            for shape_name, rows, tokens in shapes:
                seconds, faults = time_forward(loaded, rows, tokens, args.seconds)
                useful, _ = model_flops(loaded, torch.ones(rows, tokens))
                fraction = int8_fraction(loaded.model) if precision == "int8" else 1.0
                timing = Timing(task, shape_name, precision, rows, tokens, seconds, faults, useful / seconds / 1e9,
                                model_peak(peaks, precision, fraction), precision if fraction >= 1.0 else "int8+fp32")
                timings.append(timing)
                print(timing.line(), flush=True)

    # what the pipeline runs ("auto": models.auto_precision) against
    # fp32 in the same batches and against the naive loop's fp32 one-at-a-time passes
    summary = []
    for task in PIPELINE_TOKENS:
        auto = resolve_precision(task, "auto")
        pipeline_runs = {t.precision: t for t in timings if t.task == task and t.shape_name == "pipeline"}
        naive = next(t for t in timings if t.task == task and t.shape_name == "naive loop" and t.precision == "fp32")
        chosen = pipeline_runs[auto].tokens_per_s
        summary += [f"{task}_auto={auto}", f"{task}_tokens_per_s={chosen:.0f}",
                    f"{task}_vs_fp32={chosen / pipeline_runs['fp32'].tokens_per_s:.2f}",
                    f"{task}_vs_naive={chosen / naive.tokens_per_s:.2f}"]
    print(" ".join(summary))
    return 0


if __name__ == "__main__":
    from pipeline.malloc import reexec_with_tcmalloc

    reexec_with_tcmalloc()  # the malloc `python -m pipeline` runs on (NEWS_PIPELINE_MALLOC=glibc to compare)
    raise SystemExit(main())
