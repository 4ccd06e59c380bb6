"""NER windows a row each, against several windows a row (``ner.window_rows``; what the pipeline does
for bf16 passes side by side on tcmalloc where the architecture allows it, ``ner.packs_windows``).

Run from the repository root: ``python -m bench.row_packing --corpus ../shared/data/polnear/train/text
[--articles 100] [--rounds 5] [--precision auto]``.

The NER model as the pipeline loads it, run both ways over the pipeline's NER windows of the articles
(``bench.packed.compare``): outputs and labels compared, then alternating timed rounds in one process.
The stance model runs the same way on both sides (it classifies whole texts, one a row): its rounds
show how much the VM's speed alone moves a ratio.

Runs on tcmalloc where it is installed, as ``python -m bench`` and the pipeline do;
``NEWS_PIPELINE_MALLOC=glibc`` measures glibc's malloc, where the pipeline keeps a window a row.

The last line is bench.packed's, with ``packed_rows`` as the second way.
"""
from __future__ import annotations

import dataclasses

import torch

from bench.packed import arguments, compare, ner_windows
from pipeline import malloc, models, ner
from pipeline.evaluate import corpus_texts


def main(argv: list[str] | None = None) -> int:
    names = ("window_a_row", "packed_rows")
    args = arguments("python -m bench.row_packing", __doc__.split("\n\n")[0], names, argv, precision=True)
    texts = corpus_texts(args.corpus, args.articles)
    loaded = models.load_model("ner", None, args.precision)
    packed = dataclasses.replace(loaded, pack_rows=True)  # whether or not the pipeline packs them here
    if not ner.packs_windows(packed):
        raise SystemExit(f"the NER model ({packed.name}) cannot take several windows a row: nothing to compare")
    stance = models.load_model("stance", None, args.precision)
    lengths = [len(w.input_ids) for w in ner_windows(packed, texts)]
    print(f"torch threads: {torch.get_num_threads()}; ner {packed.precision}; malloc: {malloc.describe()}; "
          f"the pipeline packs rows here: {loaded.pack_rows}")
    print(f"{len(lengths)} windows of {sum(lengths) / max(1, len(lengths)):.1f} tokens on average: "
          f"{len(ner.window_rows(packed, lengths))} rows of up to {ner.PACK_ROW_TOKENS} tokens")
    print(compare(texts, (dataclasses.replace(packed, pack_rows=False), packed), (stance, stance), args.rounds, names).last_line())
    return 0


if __name__ == "__main__":
    malloc.reexec_with_tcmalloc()  # the malloc `python -m pipeline` runs on (NEWS_PIPELINE_MALLOC=glibc: glibc's)
    raise SystemExit(main())
