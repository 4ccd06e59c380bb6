"""NER windows and stance texts a row each, against several a row (``passes.input_rows``; what the
pipeline does for bf16 passes side by side on tcmalloc where the architecture allows it,
``passes.packs_inputs``).

Run from the repository root: ``python -m bench.row_packing --corpus ../shared/data/polnear/train/text
[--articles 100] [--rounds 5] [--precision auto]``.

Both models as the pipeline loads them, each run both ways (``bench.packed.compare``): NER over the
pipeline's windows of the articles, stance over their sentences (of about a quote's length); outputs
and labels compared, then alternating timed rounds in one process, so a VM whose speed swings still
gives fair pairs.

Runs on tcmalloc where it is installed, as ``python -m bench`` and the pipeline do;
``NEWS_PIPELINE_MALLOC=glibc`` measures glibc's malloc, where the pipeline keeps an input a row.

The last line is bench.packed's, with ``packed_rows`` as the second way.
"""
from __future__ import annotations

import dataclasses

import torch

from bench.packed import arguments, compare, ner_windows, stance_inputs
from pipeline import malloc, models, passes
from pipeline.evaluate import corpus_texts


def main(argv: list[str] | None = None) -> int:
    names = ("window_a_row", "packed_rows")
    args = arguments("python -m bench.row_packing", __doc__.split("\n\n")[0], names, argv, precision=True)
    texts = corpus_texts(args.corpus, args.articles)
    pairs = {}
    for task in ("ner", "stance"):
        loaded = models.load_model(task, None, args.precision)
        packed = dataclasses.replace(loaded, pack_rows=True)  # whether or not the pipeline packs them here
        if not passes.packs_inputs(packed):
            raise SystemExit(f"the {task} model ({packed.name}) cannot take several inputs a row: nothing to compare")
        pairs[task] = (dataclasses.replace(packed, pack_rows=False), packed)
    ner_model, stance_model = pairs["ner"][1], pairs["stance"][1]
    print(f"torch threads: {torch.get_num_threads()}; ner {ner_model.precision}, stance {stance_model.precision}; "
          f"malloc: {malloc.describe()}; the pipeline packs rows here: {loaded.pack_rows}")
    for what, lengths in (("windows", [len(w.input_ids) for w in ner_windows(ner_model, texts)]),
                          ("stance texts", [len(e) for e in stance_inputs(stance_model, texts)])):
        print(f"{len(lengths)} {what} of {sum(lengths) / max(1, len(lengths)):.1f} tokens on average: "
              f"{len(passes.input_rows(ner_model, lengths))} rows of up to {passes.PACK_ROW_TOKENS} tokens")
    print(compare(texts, pairs["ner"], pairs["stance"], args.rounds, names).last_line())
    return 0


if __name__ == "__main__":
    malloc.reexec_with_tcmalloc()  # the malloc `python -m pipeline` runs on (NEWS_PIPELINE_MALLOC=glibc: glibc's)
    raise SystemExit(main())
