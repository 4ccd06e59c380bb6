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
from dataclasses import dataclass

import numpy as np

from pipeline import models, ner, onednn, stance
from pipeline.evaluate import corpus_texts

SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def ner_windows(loaded: models.LoadedModel, texts: list[str]) -> list[ner.Window]:
    """The NER windows of ``texts``, as the pipeline cuts them."""
    return [w for text in texts for w in ner.preprocess(loaded, text).windows]


def stance_inputs(loaded: models.LoadedModel, texts: list[str]) -> list[list[int]]:
    """The stance model's token ids for the sentences of ``texts`` (those of more than three words)."""
    return stance.preprocess(loaded, [s for text in texts for s in SENTENCE_END.split(text) if len(s.split()) > 3])


def plain_and_packed(task: str) -> tuple[models.LoadedModel, models.LoadedModel]:
    fp32 = models.load_model(task, None, "fp32")
    plain, packed = models.to_bf16(fp32, pack=False), models.to_bf16(fp32, pack=True)
    if not any(isinstance(m, onednn.PackedLinear) for m in packed.model.modules()):
        raise SystemExit("this CPU / torch cannot pack bf16 Linear weights for oneDNN: nothing to compare")
    return plain, packed


@dataclass
class Comparison:
    ner_outputs_changed: int  # NER windows with other word probabilities
    ner_labels_changed: int  # NER words whose label moved
    stance_outputs_changed: int  # stance texts with other logits
    stance_labels_changed: int
    speedups: dict[str, list[float]]  # task -> the second model's speedup in each round

    def last_line(self) -> str:
        return (f"ner_outputs_changed={self.ner_outputs_changed} ner_labels_changed={self.ner_labels_changed} "
                f"stance_outputs_changed={self.stance_outputs_changed} stance_labels_changed={self.stance_labels_changed} "
                f"ner_speedup_median={statistics.median(self.speedups['ner']):.3f} "
                f"stance_speedup_median={statistics.median(self.speedups['stance']):.3f}")


def arguments(prog: str, description: str, names: tuple[str, str], argv: list[str] | None,
              precision: bool = False) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--corpus", required=True, help="folder of articles (.txt, .jsonl, .html)")
    parser.add_argument("--articles", type=int, default=100, help="the first N articles (default: 100)")
    parser.add_argument("--rounds", type=int, default=5, help=f"timed rounds, {names[0]} then {names[1]} in each (default: 5)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    if precision:
        parser.add_argument("--precision", default="auto", help="auto, fp32, bf16 or int8 (default: auto)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    models.set_torch_threads(args.threads)
    return args


def compare(texts: list[str], ner_pair: tuple[models.LoadedModel, models.LoadedModel],
            stance_pair: tuple[models.LoadedModel, models.LoadedModel], rounds: int,
            names: tuple[str, str]) -> Comparison:
    """Runs the pipeline's forward passes over ``texts`` (their NER windows; their sentences for the
    stance model) through both models of each pair; prints how many outputs differ, then times the
    two in alternating rounds (the second model's speedup over the first)."""
    first, second = names
    ner_a, ner_b = ner_pair
    stance_a, stance_b = stance_pair
    windows, encoded = ner_windows(ner_a, texts), stance_inputs(stance_a, texts)

    ner_probs_a, ner_probs_b = ner.forward(ner_a, windows), ner.forward(ner_b, windows)
    ner_changed = sum(not np.array_equal(a, b) for a, b in zip(ner_probs_a, ner_probs_b))
    ner_labels_changed = sum(int((a.argmax(1) != b.argmax(1)).sum()) for a, b in zip(ner_probs_a, ner_probs_b))
    ner_largest = max((float(np.abs(a - b).max()) for a, b in zip(ner_probs_a, ner_probs_b) if a.size), default=0.0)
    logits_a, logits_b = stance.forward(stance_a, encoded), stance.forward(stance_b, encoded)
    stance_changed = int((logits_a != logits_b).any(axis=1).sum())
    stance_labels_changed = int((logits_a.argmax(1) != logits_b.argmax(1)).sum())
    print(f"{len(texts)} articles: {len(windows)} NER windows, {ner_changed} with other probabilities (largest "
          f"change {ner_largest:.4f}), {ner_labels_changed} words with another label; {len(encoded)} stance texts, "
          f"{stance_changed} with other logits (largest change {np.abs(logits_a - logits_b).max():.4f}), "
          f"{stance_labels_changed} with another label")

    speedups: dict[str, list[float]] = {"ner": [], "stance": []}
    runs = (("ner", ner_a, ner_b, ner.forward, windows), ("stance", stance_a, stance_b, stance.forward, encoded))
    for round_ in range(rounds):
        line = f"round {round_}:"
        for name, model_a, model_b, forward, data in runs:
            started = time.perf_counter()
            forward(model_a, data)
            a_s = time.perf_counter() - started
            started = time.perf_counter()
            forward(model_b, data)
            b_s = time.perf_counter() - started
            speedups[name].append(a_s / b_s)
            line += f"  {name} {first} {a_s:.2f} s, {second} {b_s:.2f} s ({a_s / b_s:.2f}x)"
        print(line, flush=True)
    return Comparison(ner_changed, ner_labels_changed, stance_changed, stance_labels_changed, speedups)


def main(argv: list[str] | None = None) -> int:
    args = arguments("python -m bench.packed", __doc__.split("\n\n")[0], ("plain", "packed"), argv)
    texts = corpus_texts(args.corpus, args.articles)
    print(compare(texts, plain_and_packed("ner"), plain_and_packed("stance"), args.rounds, ("plain", "packed")).last_line())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
