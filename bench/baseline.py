"""The loop a user would write instead of the pipeline: transformers pipelines, one call per article
and one per quote, the same default models, no Beam.

Two deliberate choices, so that the loop does the same work as the pipeline:
- ``stride=64``: without it the token-classification pipeline truncates each article at 512 tokens
  (576 of PolNeAR's 840 train articles are longer) and would skip the rest of the text;
- the default NER model adds a casing embedding outside the Hugging Face model
  (``LoadedModel.forward``); the transformers pipeline calls the model without it. The weights and
  the FLOPs are the same (one embedding add per token), the entities are slightly worse.
Quotes come from ``find_quotes(text, indirect=True)``, direct quotes and reported speech as the
pipeline writes by default (no NER entities: the loop's entities are in another format);
each quote is classified by its own call; an article without quotes gets its lead classified, as
in the pipeline.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence


def naive_loop(files: Sequence[Path]) -> dict[str, float]:
    from transformers import pipeline as hf_pipeline

    from pipeline.models import load_model
    from pipeline.quotes import find_quotes
    from pipeline.stance import LEAD_CHARS

    started = time.perf_counter()
    ner = load_model("ner", None, "fp32")  # what a user gets from the Hugging Face folders
    stance = load_model("stance", None, "fp32")
    tagger = hf_pipeline("token-classification", model=ner.model, tokenizer=ner.tokenizer,
                         aggregation_strategy="simple", stride=64, device="cpu")
    classifier = hf_pipeline("text-classification", model=stance.model, tokenizer=stance.tokenizer, device="cpu")
    loaded = time.perf_counter()
    entities = quotes = 0
    for path in files:
        text = path.read_text(encoding="utf-8")
        entities += len(tagger(text))
        found = find_quotes(text, indirect=True)
        quotes += len(found)
        for quote_text in [q.text for q in found] or [text[:LEAD_CHARS]]:
            classifier(quote_text, truncation=True)
    finished = time.perf_counter()
    return {"wall_s": finished - started, "load_s": loaded - started, "loop_s": finished - loaded,
            "articles": len(files), "entities": entities, "quotes": quotes}
