"""Escalation stance of quotes, shaped like a transformers text-classification pipeline.

preprocess: tokenise (truncated to a window); forward: length-sorted batches under
inference_mode, several short texts a row where that pays (each attending to itself only);
postprocess: temperature-scaled softmax mapped onto the three labels.
"""
from __future__ import annotations

import re
from typing import Sequence

import numpy as np
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from pipeline.models import LoadedModel, ModelLoadError, truncating_encoder
from pipeline.passes import (attention_mask, block_attention, filler_rows, first_tokens, input_rows, padded, padded_width,
                             pass_batches, run_passes)
from pipeline.ner import is_english
from pipeline.records import AnalysedArticle, Quote, StanceScores

STANCE_LABELS = ["escalatory", "deescalatory", "neutral"]
# CAMEO QuadClass collapsed (shared/data/README.md): 0 statement, 1-2 cooperation, 3-4 conflict.
CAMEO_TO_STANCE = {0: "neutral", 1: "deescalatory", 2: "deescalatory", 3: "escalatory", 4: "escalatory"}
DEFAULT_MAX_TOKENS = 128
# Articles per RunInference batch, their quotes length-sorted together (as ner.DEFAULT_ARTICLES_PER_BATCH):
# python -m bench, N=300, 2-core AMX VM, tcmalloc: 64 -> 256 articles took stance padding from
# +15.9 % to +5.5 % in bf16 (64 texts a pass) and from +3.7 % to +1.7 % in fp32 (16 a pass).
DEFAULT_ARTICLES_PER_BATCH = 256


def label_columns(loaded: LoadedModel) -> list[int]:
    """Index of escalatory, deescalatory, neutral in the model's outputs; a clear error for other label sets."""
    names = [str(label).lower() for label in loaded.labels]
    missing = [label for label in STANCE_LABELS if label not in names]
    if missing:
        raise ModelLoadError(f"--stance_model {loaded.name!r} has labels {loaded.labels}; it needs {STANCE_LABELS}")
    return [names.index(label) for label in STANCE_LABELS]


def preprocess(loaded: LoadedModel, texts: Sequence[str], max_tokens: int = DEFAULT_MAX_TOKENS) -> list[list[int]]:
    """Each text's token ids with the special tokens, cut to ``max_tokens``."""
    if not texts:
        return []
    max_length = min(max_tokens, loaded.max_length)
    encoder = truncating_encoder(loaded, max_length)
    if encoder is not None:
        return [encoding.ids for encoding in encoder.encode_batch(list(texts))]
    return loaded.tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]


def forward(loaded: LoadedModel, encoded: Sequence[Sequence[int]], batch_size: int | None = None) -> np.ndarray:
    """Logits, one row per text, in input order; batched and length-sorted; several short texts a row
    where the model allows it (:func:`pipeline.passes.packs_inputs`)."""
    logits = np.zeros((len(encoded), len(loaded.labels)), dtype=np.float32)
    pad_id = loaded.tokenizer.pad_token_id or 0
    lengths = [len(e) for e in encoded]
    rows = input_rows(loaded, lengths)
    row_lengths = [sum(lengths[i] for i in row) for row in rows]

    def run_pass(chunk: list[int]) -> None:
        packed = [rows[r] for r in chunk]
        width = padded_width(loaded, max(row_lengths[r] for r in chunk))
        fill = filler_rows(loaded, len(chunk))
        input_ids = padded([[t for i in row for t in encoded[i]] for row in packed] + [[pad_id]] * fill, width, pad_id)
        if all(len(row) == 1 for row in packed):
            mask = attention_mask([row_lengths[r] for r in chunk] + [1] * fill, width)
            logits[[row[0] for row in packed]] = loaded.forward(input_ids, mask).float().numpy()[: len(chunk)]
        else:
            mask, positions = block_attention(packed, lengths, width, fill)
            heads, texts = first_tokens(packed, lengths)
            logits[texts] = loaded.forward(input_ids, mask, None, positions, heads).float().numpy()

    run_passes(loaded, run_pass, pass_batches(loaded, row_lengths, batch_size))
    return logits


def probabilities(logits: np.ndarray, temperature: float) -> np.ndarray:
    scaled = logits / max(temperature, 1e-3)
    scaled = scaled - scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    return exp / exp.sum(axis=1, keepdims=True)


def postprocess(loaded: LoadedModel, logits: np.ndarray) -> list[StanceScores]:
    columns = label_columns(loaded)
    probs = probabilities(logits, loaded.temperature)[:, columns]
    probs = probs / probs.sum(axis=1, keepdims=True)  # a model with extra labels still sums to 1 over ours
    return [StanceScores(float(p[0]), float(p[1]), float(p[2])) for p in probs]


def predict(loaded: LoadedModel, texts: Sequence[str], batch_size: int | None = None) -> list[StanceScores]:
    """Scores for each text. Each distinct text runs once: partial quotes of one sentence are all
    classified with that sentence (``stance_text``): 14% fewer stance tokens in ``python -m bench``."""
    if not texts:
        return []
    unique = list(dict.fromkeys(texts))
    scores = dict(zip(unique, postprocess(loaded, forward(loaded, preprocess(loaded, unique), batch_size))))
    return [scores[t] for t in texts]


def article_stance(quote_texts: Sequence[str], quote_scores: Sequence[StanceScores]) -> StanceScores:
    """The article-level row: quotes weighted by their length (a one-word partial quote counts little)."""
    weights = np.array([max(1, len(t.split())) for t in quote_texts], dtype=np.float64)
    probs = np.array([[s.p_escalatory, s.p_deescalatory, s.p_neutral] for s in quote_scores], dtype=np.float64)
    mean = (probs * weights[:, None]).sum(axis=0) / weights.sum()
    return StanceScores(float(mean[0]), float(mean[1]), float(mean[2]))


# --- Beam: RunInference over analysed articles ----------------------------------------------

LEAD_CHARS = 1000  # an article without quotes gets its article-level stance from its lead


SENTENCE_BREAK = re.compile(r'[.!?]["”’]?\s+(?=["“‘]?[A-Z])')
OPENING_MARKS = "\"“”'‘ \t"


def is_partial(text: str, start: int) -> bool:
    """A quote that continues its sentence (`accused the U.S. of "pushing ..."`): alone it says too
    little ("entitled", "fair target"); its stance is the stance of the sentence that frames it."""
    i = start - 1
    while i >= 0 and text[i] in OPENING_MARKS:
        i -= 1
    return i >= 0 and (text[i].isalnum() or text[i] in ",;")


def sentence_around(text: str, start: int, end: int) -> str:
    """The sentence(s) of the paragraph that contain text[start:end]."""
    para_start = text.rfind("\n", 0, start) + 1
    para_end = text.find("\n", end)
    para_end = len(text) if para_end < 0 else para_end
    paragraph = text[para_start:para_end]
    bounds = [0, *(m.end() for m in SENTENCE_BREAK.finditer(paragraph)), len(paragraph)]
    first = max(b for b in bounds if b <= start - para_start)
    last = min(b for b in bounds if b >= end - para_start)
    return paragraph[first:last].strip() or text[start:end]


def stance_text(article_text: str, quote: Quote) -> str:
    """What the stance model reads for a quote: the quote itself, or for a partial quote its sentence."""
    return sentence_around(article_text, quote.start, quote.end) if is_partial(article_text, quote.start) else quote.text


def texts_to_classify(item: AnalysedArticle) -> list[str]:
    if not is_english(item.article):
        return []
    return [stance_text(item.article.text, q) for q in item.quotes] or [item.article.text[:LEAD_CHARS]]


def with_scores(item: AnalysedArticle, scores: Sequence[StanceScores]) -> AnalysedArticle:
    if not scores:
        return item
    if item.quotes:
        item.quote_stances = list(scores)
        item.article_stance = article_stance([q.text for q in item.quotes], scores)
    else:
        item.article_stance = scores[0]
    return item


class StanceModelHandler(ModelHandler[AnalysedArticle, PredictionResult, LoadedModel]):
    """Loads the stance model once per worker; all quotes of a batch of articles are classified together."""

    def __init__(self, model_ref: str | None = None, *, max_batch_size: int = DEFAULT_ARTICLES_PER_BATCH, inner_batch_size: int | None = None,
                 large_model: bool = False, precision: str | None = None,
                 torch_threads: int | None = None):
        # min = max: full batches of articles, as NerModelHandler (more texts to length-sort together)
        super().__init__(min_batch_size=max_batch_size, max_batch_size=max_batch_size)
        self._model_ref = model_ref
        self._precision = precision
        self._inner_batch_size = inner_batch_size
        self._large_model = large_model
        self._torch_threads = torch_threads  # options.torch_threads: set in each worker process

    def load_model(self) -> LoadedModel:
        from pipeline.models import freeze_loaded_objects, load_model, set_torch_threads

        set_torch_threads(self._torch_threads)
        loaded = load_model("stance", self._model_ref, self._precision)
        label_columns(loaded)  # fail at start-up, not per batch, on a model with other labels
        freeze_loaded_objects()
        return loaded

    def run_inference(self, batch: Sequence[AnalysedArticle], model: LoadedModel, inference_args=None) -> list[PredictionResult]:
        texts = [texts_to_classify(item) for item in batch]
        scores = predict(model, [t for group in texts for t in group], self._inner_batch_size)
        results, cursor = [], 0
        for item, group in zip(batch, texts):
            item.stance_model = model.name
            results.append(PredictionResult(item, with_scores(item, scores[cursor: cursor + len(group)]), model.name))
            cursor += len(group)
        return results

    def get_num_bytes(self, batch: Sequence[AnalysedArticle]) -> int:
        """RunInference's byte-count metric: the articles' text in UTF-8. Its default pickles the whole
        batch only to measure it, entities and quotes included: 0.036 s over 300 articles (one-off)."""
        return sum(len(item.article.text.encode("utf-8", "surrogatepass")) for item in batch)

    def share_model_across_processes(self) -> bool:
        return self._large_model

    def get_metrics_namespace(self) -> str:
        return "stance"
