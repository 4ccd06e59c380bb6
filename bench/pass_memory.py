"""Tokens per forward pass, and the peak memory of two passes side by side, with and without the cap
on tokens per pass (``LoadedModel.max_pass_tokens``: ``passes.MAX_PASS_TOKENS``, or
``passes.MAX_PASS_TOKENS_SIDE_BY_SIDE`` where passes run side by side without AMX).

Run from the repository root: ``python -m bench.pass_memory --corpus ../shared/data/polnear/train/text
[--articles 840]``.

1. The NER windows of the articles, in RunInference batches of ``ner.DEFAULT_ARTICLES_PER_BATCH``
   articles, laid into rows (``passes.input_rows``) and cut into passes as the pipeline cuts them
   (``passes.pass_batches``) and as it would without the cap: tokens per pass (rows, filler rows
   included, times the padded width).
2. The largest pass of each way, twice, through ``ner.forward`` (side by side where the pipeline runs
   passes so), each in a fresh process, since peak RSS only grows: how much the two passes add to it.
   With tcmalloc preloaded, as ``python -m bench`` runs.

The last line: ``passes=… largest_uncapped=ROWSxWIDTH largest_capped=ROWSxWIDTH rss_mb_uncapped=…
rss_mb_capped=…``.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import resource
import subprocess
import sys

import numpy as np

from pipeline import models, ner, passes
from pipeline.evaluate import corpus_texts


def pass_shapes(loaded: models.LoadedModel, texts: list[str], capped: bool) -> list[tuple[int, int]]:
    """(rows, padded width) of each NER pass over ``texts``, batched as the pipeline batches articles."""
    shapes = []
    for begin in range(0, len(texts), ner.DEFAULT_ARTICLES_PER_BATCH):
        windows = [w for text in texts[begin: begin + ner.DEFAULT_ARTICLES_PER_BATCH] for w in ner.preprocess(loaded, text).windows]
        window_lengths = [len(w.input_ids) for w in windows]
        lengths = [sum(window_lengths[i] for i in row) for row in passes.input_rows(loaded, window_lengths)]
        cut = passes.pass_batches(loaded if capped else dataclasses.replace(loaded, max_pass_tokens=None), lengths)
        shapes += [(len(rows) + passes.filler_rows(loaded, len(rows)), passes.padded_width(loaded, max(lengths[i] for i in rows)))
                   for rows in cut]
    return shapes


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def two_passes(rows: int, width: int) -> float:
    """MB that two passes of rows x width (side by side where the model runs passes so) add to peak RSS."""
    # a window a row, whatever their length: the shape asked for
    loaded = dataclasses.replace(models.load_model("ner", None), pack_rows=False)
    cls_id, sep_id = loaded.tokenizer.cls_token_id, loaded.tokenizer.sep_token_id

    def windows(count: int, tokens: int) -> list[ner.Window]:
        return [ner.Window([cls_id, *[2000 + i % 50] * (tokens - 2), sep_id], [models.CASE_PAD] * tokens, 0, list(range(1, tokens - 1)))
                for i in range(count)]

    ner.forward(loaded, windows(16, 32))  # the first pass builds kernels and pools: not the passes' own memory
    loaded = dataclasses.replace(loaded, max_pass_tokens=None)  # the shape asked for, whatever the cap
    before = peak_rss_mb()
    ner.forward(loaded, windows(2 * rows, width), batch_size=rows)
    return peak_rss_mb() - before


def child_rss(rows: int, width: int) -> float:
    done = subprocess.run([sys.executable, "-m", "bench.pass_memory", "--two-passes", str(rows), str(width)],
                          capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def describe(name: str, shapes: list[tuple[int, int]], cap: int) -> str:
    tokens = np.array([rows * width for rows, width in shapes])
    p50, p90, p99 = np.percentile(tokens, [50, 90, 99])
    rows, width = max(shapes, key=lambda shape: shape[0] * shape[1])
    over = int((tokens > cap).sum())
    return (f"{name:9s} {len(shapes)} passes, tokens per pass: median {p50:,.0f}, 90 % {p90:,.0f}, 99 % {p99:,.0f}, "
            f"largest {rows}x{width} = {rows * width:,}; {over} over {cap:,}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pass_memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", help="folder of articles (.txt, .jsonl, .html)")
    parser.add_argument("--articles", type=int, default=840, help="the first N articles (default: 840)")
    parser.add_argument("--two-passes", nargs=2, type=int, metavar=("ROWS", "WIDTH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.two_passes:  # the child process of step 2
        print(f"{two_passes(*args.two_passes):.1f}")
        return 0
    if not args.corpus:
        parser.error("--corpus is required")
    loaded = models.load_model("ner", None)
    texts = corpus_texts(args.corpus, args.articles)
    if not texts:
        raise SystemExit(f"no articles in {args.corpus}")
    uncapped, capped = pass_shapes(loaded, texts, capped=False), pass_shapes(loaded, texts, capped=True)
    print(f"{len(texts)} articles, NER in {loaded.precision}, {passes.inner_batch_size(loaded)} rows a pass, "
          f"passes side by side: {loaded.side_by_side}")
    print(describe("uncapped", uncapped, loaded.max_pass_tokens))
    print(describe("capped", capped, loaded.max_pass_tokens))
    largest = [max(shapes, key=lambda shape: shape[0] * shape[1]) for shapes in (uncapped, capped)]
    added = [child_rss(*shape) for shape in largest]
    for name, (rows, width), mb in zip(("uncapped", "capped"), largest, added):
        print(f"{name:9s} two passes of {rows}x{width}: peak RSS +{mb:.0f} MB")
    print(f"passes={len(capped)} largest_uncapped={largest[0][0]}x{largest[0][1]} largest_capped={largest[1][0]}x{largest[1][1]} "
          f"rss_mb_uncapped={added[0]:.0f} rss_mb_capped={added[1]:.0f}")
    return 0


if __name__ == "__main__":
    from pipeline.malloc import reexec_with_tcmalloc

    reexec_with_tcmalloc()  # the malloc `python -m pipeline` runs on; the child processes inherit it
    raise SystemExit(main())
