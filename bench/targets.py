"""Every target of the issue "Fast" on this machine, in one command.

Run from the repository root::

    python -m bench.targets --corpus ../shared/data/polnear/train/text \\
        --conll ../shared/data/conll2003/eng.testa \\
        --stance-tsv ../shared/data/cameo_class/train.tsv --stance-tsv data/quote_stance.tsv

It runs ``python -m bench`` at each of ``--sizes`` (default 100, 1,000 and 10,000 articles; with the
naive loop up to ``--baseline-up-to`` articles, without it above), then the evaluate commands in fp32
and in the precision ``auto`` picks on this CPU (NER on the CoNLL file; stance on the dev split of
each TSV), one process each, one after another. Each command's whole output is kept under ``--out``.
It prints one line per target: the figures at each size, and whether the target is met. These are
the commands bench/README.md "Where they stand" cites, so a new kind of machine gets its column
from this one run (about 25 minutes on a 2-core AVX-512 VM, most of it N=10,000).

Two targets need a rule that the issue leaves open; this command applies:

- time per article flat: the largest size's ms an article (without model loading) at most
  FLAT_TOLERANCE over the smallest size's (a VM's speed moves 10 to 20 % within the hour);
- RSS not growing with N: over the largest run, RSS at its end at most RSS_GROWTH_GB above the
  highest RSS of its first half (the models load and malloc fills in the first minutes), and peak
  RSS at most 2 GB at 10,000 articles or more.

The last line: ``targets_met=K targets=M not_met=... not_run=...``.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

RATIO_TARGET = 4.0
NON_MODEL_TARGET = 0.15
PEAK_SHARE_TARGET = 0.5
RSS_TARGET_GB = 2.0
RSS_TARGET_ARTICLES = 10_000
F1_LOSS_TARGET = 0.005
FLAT_TOLERANCE = 0.15
RSS_GROWTH_GB = 0.05

_LAST_LINE = re.compile(r"articles_per_s=(?P<articles_per_s>[\d.]+) ratio_vs_naive=(?P<ratio>[\d.]+|n/a|nan) "
                        r"non_model_share=(?P<non_model>[\d.]+) model_peak_share=(?P<peak_share>[\d.]+) "
                        r"peak_rss_gb=(?P<peak_rss>[\d.]+)")
_STEADY = re.compile(r"without start-up \(model loading\) [\d.]+ articles/s, (\d+) ms/article")
_NER_TOKENS = re.compile(r"^ {4}ner +[\d,]+ tokens \(([\d,]+)/article\)", re.M)
_MEMORY_HEADER = "memory over the run (GB): seconds, RSS"
_MEMORY_SAMPLE = re.compile(r"\s+(\d+)\s+(\d+\.\d+)(?:\s+\S+){2}")


@dataclass
class BenchRun:
    """What ``python -m bench`` printed for one size."""
    articles: int
    articles_per_s: float
    ratio: float | None  # None without the naive loop
    non_model_share: float
    model_peak_share: float
    peak_rss_gb: float
    ms_per_article: float  # without model loading
    rss_samples: list[tuple[float, float]] = field(default_factory=list)  # (seconds, RSS GB)
    ner_tokens_per_article: int | None = None  # the corpus's first texts are shorter: N=100 reads faster


@dataclass
class F1Pair:
    """One evaluate command's score in fp32 and in the precision ``auto`` picks."""
    what: str
    precision: str
    fp32: float
    auto: float


@dataclass
class Verdict:
    target: str
    figures: str
    met: bool | None  # None: not run at the size the target asks for


def parse_bench(articles: int, output: str) -> BenchRun:
    """The figures of one ``python -m bench`` run from its standard output."""
    last = _LAST_LINE.search(output)
    steady = _STEADY.search(output)
    if last is None or steady is None:
        raise ValueError(f"N={articles}: no summary line in the benchmark's output")
    samples: list[tuple[float, float]] = []
    lines = output.splitlines()
    header = next((i for i, line in enumerate(lines) if _MEMORY_HEADER in line), None)
    if header is not None:
        for line in lines[header + 1:]:
            sample = _MEMORY_SAMPLE.fullmatch(line)
            if sample is None:
                break
            samples.append((float(sample.group(1)), float(sample.group(2))))
    ratio = last.group("ratio")
    ner_tokens = _NER_TOKENS.search(output)
    return BenchRun(articles, float(last.group("articles_per_s")), None if ratio in ("n/a", "nan") else float(ratio),
                    float(last.group("non_model")), float(last.group("peak_share")), float(last.group("peak_rss")),
                    float(steady.group(1)), samples, int(ner_tokens.group(1).replace(",", "")) if ner_tokens else None)


def parse_score(output: str, name: str) -> float:
    """``f1=…`` (evaluate ner) or ``macro_f1=…`` (evaluate stance) from an evaluate command's output."""
    found = re.findall(rf"(?<![\w]){name}=(\d+\.\d+)", output)
    if not found:
        raise ValueError(f"no {name}= in the evaluate command's output")
    return float(found[-1])


def rss_growth_gb(samples: list[tuple[float, float]]) -> float | None:
    """RSS at the end of a run less the highest RSS of its first half (None with too few samples)."""
    if len(samples) < 3:
        return None
    half = samples[-1][0] / 2
    return samples[-1][1] - max(rss for seconds, rss in samples if seconds <= half)


def _at(runs: list[BenchRun], value, fmt: str) -> str:
    return ", ".join(f"{fmt.format(value(run))} at N={run.articles:,}" for run in runs) or "no run"


def verdicts(runs: list[BenchRun], scores: list[F1Pair]) -> list[Verdict]:
    """Each target against the runs (smallest size first) and the evaluate scores."""
    runs = sorted(runs, key=lambda run: run.articles)
    out: list[Verdict] = []
    with_loop = [run for run in runs if run.ratio is not None]
    out.append(Verdict(f"pipeline >= {RATIO_TARGET:g}x the naive loop", _at(with_loop, lambda r: r.ratio, "{:.2f}x"),
                       all(run.ratio >= RATIO_TARGET for run in with_loop) if with_loop else None))
    out.append(Verdict(f"everything but the forwards <= {NON_MODEL_TARGET:.0%}", _at(runs, lambda r: r.non_model_share, "{:.3f}"),
                       all(run.non_model_share <= NON_MODEL_TARGET for run in runs) if runs else None))
    out.append(Verdict(f"forwards >= {PEAK_SHARE_TARGET:.0%} of their precision's peak", _at(runs, lambda r: r.model_peak_share, "{:.3f}"),
                       all(run.model_peak_share >= PEAK_SHARE_TARGET for run in runs) if runs else None))
    if len(runs) >= 2:
        growth = runs[-1].ms_per_article / runs[0].ms_per_article - 1
        tokens = [run.ner_tokens_per_article for run in runs]
        lengths = f"; NER tokens an article {', '.join(f'{t:,}' for t in tokens)}" if None not in tokens else ""
        out.append(Verdict("time per article flat in N", _at(runs, lambda r: r.ms_per_article, "{:.0f} ms")
                           + f" (largest {growth:+.0%} on smallest, at most {FLAT_TOLERANCE:+.0%}{lengths})", growth <= FLAT_TOLERANCE))
    else:
        out.append(Verdict("time per article flat in N", "needs two sizes", None))
    largest = runs[-1] if runs else None
    if largest is None or largest.articles < RSS_TARGET_ARTICLES:
        out.append(Verdict(f"peak RSS <= {RSS_TARGET_GB:g} GB at {RSS_TARGET_ARTICLES:,}, not growing",
                           _at(runs, lambda r: r.peak_rss_gb, "{:.2f} GB") + f"; not run at {RSS_TARGET_ARTICLES:,}", None))
    else:
        growth_gb = rss_growth_gb(largest.rss_samples)
        figures = _at(runs, lambda r: r.peak_rss_gb, "{:.2f} GB")
        figures += ("; RSS samples too few to tell growth" if growth_gb is None else
                    f"; RSS {growth_gb:+.2f} GB over the second half of N={largest.articles:,} (at most {RSS_GROWTH_GB:+.2f})")
        out.append(Verdict(f"peak RSS <= {RSS_TARGET_GB:g} GB at {RSS_TARGET_ARTICLES:,}, not growing", figures,
                           None if growth_gb is None else largest.peak_rss_gb <= RSS_TARGET_GB and growth_gb <= RSS_GROWTH_GB))
    out.append(Verdict(f"evaluate within {F1_LOSS_TARGET} F1 of fp32",
                       "; ".join(f"{s.what} {s.precision} {s.auto:.4f} (fp32 {s.fp32:.4f})" for s in scores) or "no evaluate file given",
                       all(s.fp32 - s.auto <= F1_LOSS_TARGET for s in scores) if scores else None))
    return out


def report(verdicts_: list[Verdict]) -> str:
    width = max(len(v.target) for v in verdicts_)
    lines = [f"  {v.target:<{width}}  {'met' if v.met else 'not run' if v.met is None else 'NOT MET':<7}  {v.figures}" for v in verdicts_]
    met = [v for v in verdicts_ if v.met]
    missed = [v.target for v in verdicts_ if v.met is False]
    not_run = [v.target for v in verdicts_ if v.met is None]
    lines.append(f"targets_met={len(met)} targets={len(verdicts_)} not_met={len(missed)} not_run={len(not_run)}")
    return "\n".join(lines)


def cpu_summary() -> str:
    """The CPU's model name and the flags that decide ``auto`` (Linux; '' elsewhere)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""
    name = re.search(r"^model name\s*:\s*(.+)$", info, re.M)
    flag_line = re.search(r"^flags\s*:\s*(.+)$", info, re.M)
    flags = set(flag_line.group(1).split()) if flag_line else set()
    wanted = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8") if f in flags]
    return f"{name.group(1).strip() if name else 'unknown CPU'}; {' '.join(wanted) or 'no AVX2'}"


def run_logged(command: list[str], log: Path) -> str:
    """Run ``command``, keep its whole output in ``log``, echo the benchmark's progress lines; its output."""
    print(f"bench.targets: {' '.join(command)}  (log: {log})", file=sys.stderr, flush=True)
    start = time.monotonic()
    lines: list[str] = []
    env = dict(os.environ, PYTHONUNBUFFERED="1")  # the log fills as the command runs, not at its end
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, env=env) as process, \
            log.open("w", encoding="utf-8") as out:
        assert process.stdout is not None
        for line in process.stdout:
            out.write(line)
            lines.append(line)
            if line.startswith("bench: "):
                print(f"  {line.rstrip()}", file=sys.stderr, flush=True)
    output = "".join(lines)
    if process.returncode != 0:
        raise RuntimeError(f"exit status {process.returncode} after {time.monotonic() - start:.0f} s; "
                           f"the last lines:\n{''.join(lines[-15:])}")
    print(f"  done in {time.monotonic() - start:.0f} s", file=sys.stderr, flush=True)
    return output


def auto_precisions() -> dict[str, str]:
    from pipeline.models import auto_precision

    return {task: auto_precision(task) for task in ("ner", "stance")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.targets", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("--corpus", required=True, help="folder of .txt articles (e.g. ../shared/data/polnear/train/text)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10_000], metavar="N",
                        help="articles a benchmark run (default: 100 1000 10000)")
    parser.add_argument("--baseline-up-to", type=int, default=1000, metavar="N",
                        help="run the naive loop beside sizes up to N articles (default 1000; it runs about 3 articles/s)")
    parser.add_argument("--conll", help="CoNLL file for the NER F1 (e.g. ../shared/data/conll2003/eng.testa)")
    parser.add_argument("--stance-tsv", action="append", default=[], metavar="TSV",
                        help="labelled TSV whose dev split scores the stance model; repeat for several")
    parser.add_argument("--out", default="out/bench-targets", help="folder for each command's output (default out/bench-targets)")
    args = parser.parse_args(argv)

    if not Path(args.corpus).is_dir():
        parser.error(f"--corpus {args.corpus}: not a folder")
    for path in ([args.conll] if args.conll else []) + args.stance_tsv:
        if not Path(path).is_file():
            parser.error(f"{path}: no such file")
    if any(n < 1 for n in args.sizes):
        parser.error("--sizes: each must be at least 1")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    precisions = auto_precisions()
    cpu = cpu_summary()
    print(f"bench.targets: {cpu}; auto precision: NER {precisions['ner']}, stance {precisions['stance']}",
          file=sys.stderr, flush=True)

    failures: list[str] = []
    runs: list[BenchRun] = []
    for n in sorted(set(args.sizes)):
        command = [sys.executable, "-m", "bench", "--corpus", args.corpus, "--articles", str(n),
                   "--baseline" if n <= args.baseline_up_to else "--no-baseline"]
        try:
            runs.append(parse_bench(n, run_logged(command, out / f"bench_{n}.log")))
        except (RuntimeError, ValueError) as error:
            failures.append(f"python -m bench --articles {n}: {error}")

    scores: list[F1Pair] = []
    evaluations = ([("ner", f"NER {Path(args.conll).name}", ["ner", "--conll", args.conll], "f1")] if args.conll else [])
    evaluations += [("stance", f"stance {Path(tsv).name} dev", ["stance", "--tsv", tsv, "--split", "dev"], "macro_f1")
                    for tsv in args.stance_tsv]
    for task, what, evaluate_args, score_name in evaluations:
        if precisions[task] == "fp32":
            continue  # auto is fp32 here: nothing to lose against it
        found: dict[str, float] = {}
        for precision in ("fp32", precisions[task]):
            command = [sys.executable, "-m", "pipeline", "evaluate", *evaluate_args, f"--{task}_precision", precision]
            log = out / f"evaluate_{re.sub(r'[^A-Za-z0-9]+', '_', what).strip('_')}_{precision}.log"
            try:
                found[precision] = parse_score(run_logged(command, log), score_name)
            except (RuntimeError, ValueError) as error:
                failures.append(f"{' '.join(command[2:])}: {error}")
        if len(found) == 2:
            scores.append(F1Pair(what, precisions[task], found["fp32"], found[precisions[task]]))

    print(f"\n== targets of the issue \"Fast\" on this machine ({cpu}); logs in {out}")
    print(report(verdicts(runs, scores)))
    for failure in failures:
        print(f"bench.targets: FAILED {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
