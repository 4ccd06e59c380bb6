"""python -m bench --corpus DIR --articles N [--baseline/--no-baseline] [pipeline options ...]

Runs the real pipeline (pipeline.run.run, in-process FnApiRunner) over N articles of DIR (*.txt,
cycled when N is larger; the k-th copy of a text starts with "Copy k." so that it is a distinct
article and not dropped as a duplicate), with a timer on every stage function (bench/instrument.py).
Then, in the same process: the plain transformers loop over the same files (bench/baseline.py) and
the machine's matmul peak (bench/peak.py). Options it does not know go to the pipeline
(e.g. --inference_batch_size 32).
"""
from __future__ import annotations

import argparse
import logging
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Targets of the issue "Fast": (name, threshold, higher is better)
TARGETS = {
    "ratio_vs_naive": (4.0, True),
    "non_model_share": (0.15, False),
    "model_peak_share": (0.50, True),
    "peak_rss_gb": (2.0, False),
}


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", required=True, help="folder of .txt articles (e.g. ../shared/data/polnear/train/text)")
    parser.add_argument("--articles", type=positive_int, required=True, help="how many articles to run (the corpus is cycled)")
    parser.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=True,
                        help="also time the plain transformers loop over the same articles (default: yes)")
    parser.add_argument("--memory-every", type=float, default=60.0, metavar="SECONDS",
                        help="sample RSS and malloc's heap (in use, free) this often during the run, and print a progress line to stderr (default: 60)")
    parser.add_argument("--workdir", help="where to write the input copies and the output (default: a temporary folder, removed)")
    return parser.parse_known_args(argv)


def prepare_input(corpus: Path, count: int, folder: Path) -> list[Path]:
    if not corpus.is_dir():
        raise SystemExit(f"--corpus {corpus}: not a folder")
    sources = sorted(p for p in corpus.glob("*.txt") if p.is_file())
    if not sources:
        raise SystemExit(f"--corpus {corpus}: no .txt files")
    texts = [p.read_text(encoding="utf-8") for p in sources]
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(count):
        copy, text = divmod(i, len(texts))[0], texts[i % len(texts)]
        path = folder / f"{i:06d}.txt"
        path.write_text(text if copy == 0 else f"Copy {copy}.\n{text}", encoding="utf-8")
        files.append(path)
    return files


# Modules that the timed code imports on first use. Both sides are timed from warm imports:
# the pipeline used to import transformers' BERT code (about 3 s here) inside its timed model
# loading, and the loop then found it imported, which tilted the ratio against the pipeline.
WARM_IMPORTS = (
    "transformers.models.bert.modeling_bert",  # both: the models' architecture
    "transformers.pipelines",  # the loop
    "apache_beam.runners.portability.fn_api_runner.fn_runner",  # the pipeline's local runner
)


def warm_imports() -> float:
    """Import :data:`WARM_IMPORTS`; returns the seconds it took (printed, timed for neither side)."""
    import importlib

    started = time.perf_counter()
    for module in WARM_IMPORTS:
        importlib.import_module(module)
    return time.perf_counter() - started


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # ru_maxrss is KiB on Linux


def row(name: str, seconds: float, wall: float, note: str = "") -> str:
    return f"  {name:<42}{seconds:8.2f} s {100 * seconds / wall:6.1f} %  {note}"


def check_one_worker(pipeline_args: list[str]) -> None:
    """The stage timers add up calls in this process, and peak RSS is this process's: both assume
    the default single local worker. Parallel local workers were no faster on 2 cores (one-off,
    bench/RESULTS.md), so the benchmark does not try to account for them."""
    from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions

    direct = PipelineOptions(pipeline_args).view_as(DirectOptions)
    if direct.direct_num_workers not in (None, 1):
        raise SystemExit(f"--direct_num_workers={direct.direct_num_workers}: the benchmark times the stages of one local "
                         "worker (its breakdown and peak RSS would be wrong with several); run it without that option")


def main(argv: list[str] | None = None) -> int:
    args, pipeline_args = parse_args(argv)
    check_one_worker(pipeline_args)
    logging.basicConfig(level=logging.WARNING)
    import torch

    from bench import instrument
    from bench.memory import CollectorTime, MemorySampler, minor_page_faults
    from bench.peak import PEAK_ROUNDS, measure_peak, model_peak
    from pipeline import malloc

    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench-"))
    try:
        files = prepare_input(Path(args.corpus), args.articles, work / "input")
        output = work / "output"
        shutil.rmtree(output, ignore_errors=True)

        imports_s = warm_imports()
        instrument.install()
        from pipeline.beside import Stats as BesideStats
        from pipeline.run import run
        BesideStats.reset()

        def progress(sample) -> None:  # a long run says where it is (stderr: the report stays on stdout)
            # articles enter NER 64 at a time and leave stance 256 at a time (the default batches)
            tagged, done = instrument.CALLS.get("ner: preprocess", 0), instrument.CALLS.get("rows", 0)
            print(f"bench: {sample.seconds:,.0f} s, of {args.articles:,} articles {tagged:,} into NER and {done:,} "
                  f"through the pipeline, RSS {sample.rss_gb:.2f} GB", file=sys.stderr, flush=True)

        started, faults_before = time.perf_counter(), minor_page_faults()
        with MemorySampler(args.memory_every, on_sample=progress) as memory, CollectorTime() as collector:
            counts = run(["--input", str(work / "input"), "--output", str(output), *pipeline_args])
        wall = time.perf_counter() - started
        # before the baseline and the matmul test add their own memory; a process beside the passes
        # (pipeline.beside) counts too: both peaks added, as if they came at once
        rss_main, rss_beside = peak_rss_gb(), BesideStats.peak_rss_bytes / 1e9
        rss = rss_main + rss_beside
        faults = minor_page_faults() - faults_before
        instrument.uninstall()
        s, tokens = dict(instrument.SECONDS), {k: dict(v) for k, v in instrument.TOKENS.items()}

        n = args.articles
        print(f"\n== pipeline: {n} articles from {args.corpus} "
              f"(cycled, copies prefixed 'Copy k.'), torch {torch.__version__}, {torch.get_num_threads()} threads, "
              f"options {' '.join(pipeline_args) or '(defaults)'}")
        print("   " + " ".join(f"{k}={v}" for k, v in counts.items()))
        print(f"   Python imports of both sides, before either is timed: {imports_s:.1f} s")
        print(f"   malloc: {malloc.describe()}")
        startup = s.get("startup: model load", 0.0)
        articles_per_s = n / wall
        steady = n / max(wall - startup, 1e-9)
        print(f"  wall {wall:.1f} s: {articles_per_s:.2f} articles/s, {1000 * wall / n:.0f} ms/article; "
              f"without start-up (model loading) {steady:.2f} articles/s, {1000 * (wall - startup) / n:.0f} ms/article")

        model_s = s.get("ner: model", 0.0) + s.get("stance: model", 0.0)
        all_tokens = sum(t.get("tokens", 0) for t in tokens.values())
        print(f"  model tokens/s: {all_tokens / wall:,.0f} over the wall, {all_tokens / max(model_s, 1e-9):,.0f} in forward passes")
        for task in ("ner", "stance"):
            t = tokens.get(task, {})
            ms = s.get(f"{task}: model", 0.0)
            if t:
                print(f"    {task:<7}{t['tokens']:>12,.0f} tokens ({t['tokens'] / n:,.0f}/article), "
                      f"padding +{100 * (t['padded_tokens'] / t['tokens'] - 1):.1f} %, "
                      f"{instrument.CALLS.get(f'{task}: model', 0):,} forward calls, "
                      f"{t['tokens'] / max(ms, 1e-9):,.0f} tokens/s in forward")

        s["quotes"] = s.get("quotes", 0.0) + s.get("quotes: requests encoded", 0.0) + s.get("quotes: answers decoded", 0.0)
        top = ["startup: model load", "read+parse", "ner", "quotes", "stance", "rows", "write"]
        accounted = sum(s.get(k, 0.0) for k in top)
        print("\n  where wall time goes" + " " * 23 + "seconds    share")
        print(row("start-up: model loading", startup, wall, "both models once (RunInference reuses them)"))
        print(row("read and parse", s.get("read+parse", 0.0), wall))
        print(row("  of which language id", s.get("read+parse: language id", 0.0), wall))

        def model_stage(task: str, title: str, before: list[tuple[str, str]]) -> None:
            print(row(title, s.get(task, 0.0), wall))
            for name, step in before:
                print(row(f"  {name}", s.get(f"{task}: {step}", 0.0), wall))
            print(row("  forward: model (torch)", s.get(f"{task}: model", 0.0), wall))
            print(row("  forward: padding, batching", s.get(f"{task}: forward", 0.0) - s.get(f"{task}: model", 0.0), wall))
            print(row("  postprocess", s.get(f"{task}: postprocess", 0.0), wall))

        model_stage("ner", "NER", [("preprocess (words, tokenizer, windows)", "preprocess")])
        print(row("quotes (canonical names, quotes)", s.get("quotes", 0.0), wall,
                  "sending, waiting and decoding: the work is beside" if BesideStats.calls else ""))
        if BesideStats.calls:
            print(f"    beside, at {BesideStats.priority} priority: {BesideStats.calls:,} articles, {BesideStats.cpu_s:.2f} s CPU "
                  "(on the cores the Python leaves idle; the worker did the others: the last of a bundle, and any not answered in time)")
        model_stage("stance", "stance", [("texts to classify", "texts"), ("tokenizer", "preprocess")])
        print(row("rows", s.get("rows", 0.0), wall))
        print(row("write (Parquet)", s.get("write", 0.0), wall))
        print(row("Beam overhead (the rest)", wall - accounted, wall, "coders, bundles, GroupByKey, RunInference batching"))
        print(row("  of which building the graph", s.get("beam: graph", 0.0), wall))
        print(row("  translating it for the runner", s.get("beam: translation", 0.0), wall))
        print(row("  waiting for the state sampler", s.get("beam: state sampler", 0.0), wall, "at each bundle's end"))
        non_model_share = 1.0 - model_s / wall
        print(row("model forward passes", model_s, wall))
        print(row("everything else", wall - model_s, wall))
        print(collector.report())
        print(f"  peak RSS {rss:.2f} GB" + (f" ({rss_main:.2f} GB, and {rss_beside:.2f} GB in the process beside)" if rss_beside else ""))
        calls = sum(instrument.CALLS.get(f"{task}: model", 0) for task in ("ner", "stance"))
        print(f"  minor page faults {faults:,} ({faults / max(calls, 1):,.0f} per forward call): "
              f"memory handed back by malloc and touched again")
        print("\n".join(memory.report()))

        # the precision each model ran in, the machine's peak for it, and what each forward reached
        peaks = {p: measure_peak(p) for p in ("fp32", "int8", "bf16")}
        peak = {p: found.gflops for p, found in peaks.items()}
        print(f"\n== matmul peak ({torch.get_num_threads()} threads; the best of {PEAK_ROUNDS} rounds over squares and the "
              f"encoder's Linear shapes, bench/peak.py): fp32 {peaks['fp32'].describe()}, int8 dynamic {peaks['int8'].describe()} "
              f"(per-channel, activations quantized on the fly), bf16 {peaks['bf16'].describe()}")
        weighted, model_total = 0.0, 0.0
        for task in ("ner", "stance"):
            t, secs = tokens.get(task, {}), s.get(f"{task}: model", 0.0)
            if not t or secs <= 0:
                continue
            precision = instrument.PRECISION.get(task, "fp32")
            fraction = instrument.INT8_FRACTION.get(task, 1.0)
            task_peak, peak_name = model_peak(peak, precision, fraction), f"{precision} peak"
            if task_peak != peak[precision]:
                peak_name = f"peak of int8 for {100 * fraction:.0f} % of the Linear weights, fp32 for the rest ({task_peak:.0f})"
            achieved = t.get("flops", 0.0) / secs / 1e9
            executed = t.get("executed_flops", 0.0) / secs / 1e9
            share = achieved / task_peak
            weighted, model_total = weighted + share * secs, model_total + secs
            print(f"  {task} forward ({precision}): {achieved:.1f} GFLOP/s on real tokens ({t.get('flops', 0) / 1e12:.2f} TFLOP "
                  f"in {secs:.1f} s), {executed:.1f} GFLOP/s counting padding: {100 * share:.0f} % of the {peak_name}")
        model_peak_share = weighted / model_total if model_total else 0.0
        print(f"  both models, weighted by their forward time: {100 * model_peak_share:.0f} % of the peak of their precision")

        ratio = float("nan")
        if args.baseline:
            from bench.baseline import naive_loop

            base = naive_loop(files)
            base_rate = n / base["wall_s"]
            ratio = articles_per_s / base_rate
            print(f"\n== naive loop (transformers pipelines, per article and per quote, no Beam): wall {base['wall_s']:.1f} s "
                  f"(loading {base['load_s']:.1f} s), {base_rate:.2f} articles/s, {base['quotes']} quotes; "
                  f"pipeline / loop = {ratio:.2f}x (without loading: {steady / (n / base['loop_s']):.2f}x)")

        figures = {"ratio_vs_naive": ratio, "non_model_share": non_model_share,
                   "model_peak_share": model_peak_share, "peak_rss_gb": rss}
        print("\n== targets")
        for name, (threshold, higher) in TARGETS.items():
            value = figures[name]
            met = "n/a" if value != value else ("met" if (value >= threshold if higher else value <= threshold) else "NOT met")
            print(f"  {name:<18}{value:8.3f}  target {'>=' if higher else '<='} {threshold}: {met}")
        print("  time per article flat in N, RSS not growing with N: compare runs of different --articles")

        print(f"articles_per_s={articles_per_s:.3f} ratio_vs_naive={'n/a' if ratio != ratio else f'{ratio:.2f}'} "
              f"non_model_share={non_model_share:.3f} model_peak_share={model_peak_share:.3f} peak_rss_gb={rss:.2f}")
        sys.stdout.flush()
        return 0
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)

