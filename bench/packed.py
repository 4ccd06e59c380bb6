"""What packing the bf16 Linear weights for oneDNN changes (``pipeline.onednn``, ``models.to_bf16``).

Run from the repository root, on a CPU with native bf16:
``python -m bench.packed --corpus ../shared/data/polnear/train/text [--articles 100] [--rounds 5]``.

Both models are made bf16 twice from fp32, with plain and with packed Linear layers. It runs the
pipeline's forward passes (the NER windows of the articles, the stance model on their sentences,
cut into passes as the pipeline cuts them) through both, says how many outputs differ, then times
the two in alternating rounds in one process: a VM whose speed swings between runs still gives
comparable pairs.

The last line: ``ner_outputs_changed=… ner_labels_changed=… stance_outputs_changed=… stance_labels_changed=…
ner_speedup_median=… stance_speedup_median=…`` (outputs: NER windows with other word probabilities,
stance texts with other logits; labels: NER words and stance texts whose label moved).
"""
from __future__ import annotations

import argparse
import logging
import re
import statistics
import time

import numpy as np

from pipeline import models, ner, onednn, stance
from pipeline.evaluate import corpus_texts

SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def plain_and_packed(task: str) -> tuple[models.LoadedModel, models.LoadedModel]:
    fp32 = models.load_model(task, None, "fp32")
    plain, packed = models.to_bf16(fp32, pack=False), models.to_bf16(fp32, pack=True)
    if not any(isinstance(m, onednn.PackedLinear) for m in packed.model.modules()):
        raise SystemExit("this CPU / torch cannot pack bf16 Linear weights for oneDNN: nothing to compare")
    return plain, packed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.packed", description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", required=True, help="folder of articles (.txt, .jsonl, .html)")
    parser.add_argument("--articles", type=int, default=100, help="the first N articles (default: 100)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds, plain then packed in each (default: 5)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    models.set_torch_threads(args.threads)

    texts = corpus_texts(args.corpus, args.articles)
    ner_plain, ner_packed = plain_and_packed("ner")
    stance_plain, stance_packed = plain_and_packed("stance")
    windows = [w for text in texts for w in ner.preprocess(ner_plain, text).windows]
    sentences = [s for text in texts for s in SENTENCE_END.split(text) if len(s.split()) > 3]
    encoded = stance.preprocess(stance_plain, sentences)

    ner_plain_probs, ner_packed_probs = ner.forward(ner_plain, windows), ner.forward(ner_packed, windows)
    ner_changed = sum(not np.array_equal(a, b) for a, b in zip(ner_plain_probs, ner_packed_probs))
    ner_labels_changed = sum(int((a.argmax(1) != b.argmax(1)).sum()) for a, b in zip(ner_plain_probs, ner_packed_probs))
    ner_largest = max((float(np.abs(a - b).max()) for a, b in zip(ner_plain_probs, ner_packed_probs) if a.size), default=0.0)
    plain_logits, packed_logits = stance.forward(stance_plain, encoded), stance.forward(stance_packed, encoded)
    stance_changed = int((plain_logits != packed_logits).any(axis=1).sum())
    stance_labels_changed = int((plain_logits.argmax(1) != packed_logits.argmax(1)).sum())
    print(f"{len(texts)} articles: {len(windows)} NER windows, {ner_changed} with other probabilities (largest "
          f"change {ner_largest:.4f}), {ner_labels_changed} words with another label; {len(encoded)} stance texts, "
          f"{stance_changed} with other logits (largest change {np.abs(plain_logits - packed_logits).max():.4f}), "
          f"{stance_labels_changed} with another label")

    speedups: dict[str, list[float]] = {"ner": [], "stance": []}
    runs = (("ner", ner_plain, ner_packed, ner.forward, windows), ("stance", stance_plain, stance_packed, stance.forward, encoded))
    for round_ in range(args.rounds):
        line = f"round {round_}:"
        for name, plain, packed, forward, data in runs:
            started = time.perf_counter()
            forward(plain, data)
            plain_s = time.perf_counter() - started
            started = time.perf_counter()
            forward(packed, data)
            packed_s = time.perf_counter() - started
            speedups[name].append(plain_s / packed_s)
            line += f"  {name} plain {plain_s:.2f} s, packed {packed_s:.2f} s ({plain_s / packed_s:.2f}x)"
        print(line, flush=True)
    print(f"ner_outputs_changed={ner_changed} ner_labels_changed={ner_labels_changed} "
          f"stance_outputs_changed={stance_changed} stance_labels_changed={stance_labels_changed} "
          f"ner_speedup_median={statistics.median(speedups['ner']):.3f} "
          f"stance_speedup_median={statistics.median(speedups['stance']):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
