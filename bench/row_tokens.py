"""How long the rows of several inputs should be (``passes.PACK_ROW_TOKENS``), at the same tokens a pass.

Run from the repository root: ``python -m bench.row_tokens --corpus ../shared/data/polnear/train/text
[--articles 100] [--rounds 6] [--tokens 128 64] [--precision auto]``.

Both models as the pipeline loads them, their rows packed whether or not the pipeline packs them
on this machine (it does for passes side by side on tcmalloc, bf16 or int8 native to the CPU): the NER windows of the articles and the stance model on their sentences
(``bench.packed``). For each row length in ``--tokens`` a pass holds as many tokens as the
pipeline's passes do (``PACKED_ROWS_PER_PASS`` times ``PACK_ROW_TOKENS``), so only the rows' length
moves: a row's attention costs its width squared, whatever share of it the block mask keeps, and
shorter rows pack the inputs less tightly. The lengths run in alternating rounds in one process,
so a VM whose speed swings still gives fair comparisons.

The last line: ``ner_<tokens>_s=… stance_<tokens>_s=…`` for each length, the median seconds of the
forward passes over all the inputs.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import statistics
import time

import torch

from bench.packed import ner_windows, stance_inputs
from pipeline import malloc, models, ner, passes, stance
from pipeline.evaluate import corpus_texts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.row_tokens", description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", required=True, help="folder of articles (.txt, .jsonl, .html)")
    parser.add_argument("--articles", type=int, default=100, help="the first N articles (default: 100)")
    parser.add_argument("--rounds", type=int, default=6, help="timed rounds, every length in each (default: 6)")
    parser.add_argument("--tokens", type=int, nargs="+", default=[128, 64], help="row lengths to compare (default: 128 64)")
    parser.add_argument("--precision", default="auto", help="auto, fp32, bf16 or int8 (default: auto)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    args = parser.parse_args(argv)
    if any(t < 8 for t in args.tokens):
        parser.error("--tokens: rows of at least 8 tokens")
    logging.basicConfig(level=logging.WARNING)
    models.set_torch_threads(args.threads)
    texts = corpus_texts(args.corpus, args.articles)

    runs, packs_here = [], []
    for task, cut, forward in (("ner", ner_windows, ner.forward), ("stance", stance_inputs, stance.forward)):
        pipeline_model = models.load_model(task, None, args.precision)
        packs_here.append(f"{task} {pipeline_model.pack_rows}")
        loaded = dataclasses.replace(pipeline_model, pack_rows=True)  # whether or not the pipeline packs them here
        if not passes.packs_inputs(loaded):
            raise SystemExit(f"the {task} model ({loaded.name}) cannot take several inputs a row: nothing to compare")
        inputs = cut(loaded, texts)
        forward(loaded, inputs[:64])  # oneDNN's first kernels, out of the timed rounds
        runs.append((task, loaded, inputs, forward))
    tokens_a_pass = {p: rows * passes.PACK_ROW_TOKENS for p, rows in passes.PACKED_ROWS_PER_PASS.items()}
    print(f"torch threads: {torch.get_num_threads()}; malloc: {malloc.describe()}; the pipeline packs rows here: "
          f"{', '.join(packs_here)}; " + "; ".join(
        f"{task} {loaded.precision}: {len(inputs)} inputs, {tokens_a_pass[loaded.precision]} tokens a pass"
        for task, loaded, inputs, _ in runs))

    shipped = passes.PACK_ROW_TOKENS, dict(passes.PACKED_ROWS_PER_PASS)
    seconds: dict[tuple[str, int], list[float]] = {}
    try:
        for round_ in range(args.rounds):
            line = f"round {round_}:"
            for task, loaded, inputs, forward in runs:
                for tokens in args.tokens:
                    passes.PACK_ROW_TOKENS = tokens
                    passes.PACKED_ROWS_PER_PASS[loaded.precision] = max(1, tokens_a_pass[loaded.precision] // tokens)
                    started = time.perf_counter()
                    forward(loaded, inputs)
                    took = time.perf_counter() - started
                    seconds.setdefault((task, tokens), []).append(took)
                    line += f"  {task} {tokens}: {took:.2f} s"
            print(line, flush=True)
    finally:
        passes.PACK_ROW_TOKENS, passes.PACKED_ROWS_PER_PASS = shipped
    print(" ".join(f"{task}_{tokens}_s={statistics.median(s):.3f}" for (task, tokens), s in seconds.items()))
    return 0


if __name__ == "__main__":
    malloc.reexec_with_tcmalloc()  # the malloc `python -m pipeline` runs on; rows are packed only on tcmalloc
    raise SystemExit(main())
