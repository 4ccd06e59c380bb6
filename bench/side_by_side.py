"""Forward passes one at a time on all of torch's threads, against as many passes side by side, one
thread each (``passes.run_passes``; the default for bf16 where it is native and int8 with AVX512-VNNI).

Run from the repository root: ``python -m bench.side_by_side --corpus ../shared/data/polnear/train/text
[--articles 100] [--rounds 5]``.

Both models as the pipeline loads them (precision ``auto``), each run both ways over the pipeline's
passes (``bench.packed.compare``: the NER windows of the articles, the stance model on their
sentences): outputs and labels compared, then alternating timed rounds in one process. Any
precision can be measured this way, whichever way the pipeline runs it.

The last line is bench.packed's, with ``side_by_side`` as the second way.
"""
from __future__ import annotations

import dataclasses
import sys

import torch

from bench.packed import arguments, compare
from pipeline import models
from pipeline.evaluate import corpus_texts


def both_ways(task: str) -> tuple[models.LoadedModel, models.LoadedModel]:
    loaded = models.load_model(task, None)
    return dataclasses.replace(loaded, side_by_side=False), dataclasses.replace(loaded, side_by_side=True)


def main(argv: list[str] | None = None) -> int:
    names = ("one_at_a_time", "side_by_side")
    args = arguments("python -m bench.side_by_side", __doc__.split("\n\n")[0], names, argv)
    texts = corpus_texts(args.corpus, args.articles)
    pairs = both_ways("ner"), both_ways("stance")
    print(f"torch threads: {torch.get_num_threads()}; ner {pairs[0][0].precision}, stance {pairs[1][0].precision}", file=sys.stderr)
    print(compare(texts, *pairs, args.rounds, names).last_line())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
