"""What skipping nameless sentences saves and changes (``pipeline.ner.preprocess(skip_nameless=...)``).

Run from the repository root:
``python -m bench.nameless --corpus ../shared/data/polnear/train/text [--articles N] [--precision int8]``.

Over the articles of ``--corpus`` it runs the NER model twice, reading every sentence and skipping
the sentences that cannot hold a name, and prints the tokens and time of the forward passes and
the entities that changed. The comparison that says whether skipping changes the answers runs in
fp32, whose results do not depend on which windows share a forward pass. int8's do (one activation
scale per pass: skipping windows regroups the rest), so for ``--precision int8`` (or bf16) it scores
each way against fp32 reading every sentence, as ``python -m pipeline evaluate precision`` does.

The last line: ``tokens_skipped=… fp32_entities=… fp32_entities_changed=… [P_f1_vs_fp32_all=… P_f1_vs_fp32_skipping=…]``.
"""
from __future__ import annotations

import argparse
import logging
import time

from pipeline import models, ner
from pipeline.evaluate import corpus_texts, span_f1

Spans = list[set[tuple[int, int, str]]]


def entities(loaded: models.LoadedModel, texts: list[str], skip_nameless: bool) -> tuple[Spans, int, float]:
    """Each text's entities as (start, end, label), the tokens the model read, and the forwards' seconds."""
    docs = [ner.preprocess(loaded, text, skip_nameless=skip_nameless) for text in texts]
    started = time.perf_counter()
    probs = ner.run_docs(loaded, docs)
    seconds = time.perf_counter() - started
    found = [{(e.start, e.end, e.label) for e in ner.postprocess(loaded, doc, p)} for doc, p in zip(docs, probs)]
    return found, sum(len(w.input_ids) for doc in docs for w in doc.windows), seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.nameless", description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", required=True, help="folder of articles (.txt, .jsonl, .html)")
    parser.add_argument("--articles", type=int, default=None, help="only the first N articles (default: all)")
    parser.add_argument("--precision", choices=["int8", "bf16"], default=None,
                        help="also score this precision against fp32, reading every sentence and skipping")
    parser.add_argument("--ner_model", default=None, help="as the pipeline's --ner_model (default: the project's own)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        texts = corpus_texts(args.corpus, args.articles)
    except (FileNotFoundError, ValueError) as exc:
        parser.error(str(exc))
    fp32 = models.load_model("ner", args.ner_model, "fp32")
    all_found, all_tokens, all_seconds = entities(fp32, texts, skip_nameless=False)
    skip_found, skip_tokens, skip_seconds = entities(fp32, texts, skip_nameless=True)
    changed = sum(len(a ^ b) for a, b in zip(all_found, skip_found))
    print(f"{len(texts)} articles, NER in fp32: {all_tokens:,} tokens reading every sentence, {skip_tokens:,} skipping "
          f"nameless ones ({1 - skip_tokens / all_tokens:.1%} fewer); forwards {all_seconds:.1f} s -> {skip_seconds:.1f} s")
    print(f"  entities: {sum(map(len, all_found)):,} reading every sentence; changed by skipping: {changed} "
          f"(in {sum(a != b for a, b in zip(all_found, skip_found))} articles)")
    for i, (a, b) in enumerate(zip(all_found, skip_found)):
        for start, end, label in sorted(a ^ b):
            print(f"    article {i}: {texts[i][start:end]!r} {label} {'lost' if (start, end, label) in a else 'new'}")
    last = (f"tokens_skipped={1 - skip_tokens / all_tokens:.3f} fp32_entities={sum(map(len, all_found))} "
            f"fp32_entities_changed={changed}")
    if args.precision:
        other = models.load_model("ner", args.ner_model, args.precision)
        scores = {skip: span_f1(all_found, entities(other, texts, skip_nameless=skip)[0]) for skip in (False, True)}
        print(f"  {args.precision} against fp32 reading every sentence, entity F1: {scores[False]:.4f} reading every "
              f"sentence, {scores[True]:.4f} skipping")
        last += f" {args.precision}_f1_vs_fp32_all={scores[False]:.4f} {args.precision}_f1_vs_fp32_skipping={scores[True]:.4f}"
    print(last)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
