"""Several inputs a row (passes.input_rows, passes.pack_rows, passes.block_attention): every NER window
and stance text once, rows within their capacity, and the same answers as an input a row."""
import copy
import dataclasses

import numpy as np
import pytest
import torch

from pipeline import models, ner, passes, stance
from pipeline.records import Quote


def test_pack_rows_lays_every_input_once_within_the_capacity():
    lengths = [30, 100, 20, 60, 128, 200, 10, 40, 90]
    rows = passes.pack_rows(lengths, 128)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= 128 for row in rows if len(row) > 1)
    assert [5] in rows and [4] in rows  # longer than the room left anywhere: a row of their own
    # best fit, longest first: 100 takes 20; 90 takes 30; 60 takes 40 and 10 ... 6 rows at most
    assert len(rows) <= 6
    assert passes.pack_rows([], 128) == []
    assert passes.pack_rows([5, 5, 5], 4) == [[0], [1], [2]]  # each over the capacity: one a row


def test_block_attention_keeps_each_window_to_itself():
    lengths = [3, 2, 4]
    mask, positions = passes.block_attention([[0, 1], [2]], lengths, width=5, fill=1)
    assert mask.shape == (3, 1, 5, 5) and positions.shape == (3, 5)
    first = mask[0, 0]
    assert first[:3, :3].all() and first[3:5, 3:5].all()  # window 0, then window 1
    assert not first[:3, 3:].any() and not first[3:, :3].any()
    assert positions[0].tolist() == [0, 1, 2, 0, 1]
    second = mask[1, 0]
    assert second[:4, :4].all() and not second[:4, 4].any()
    assert second[4].tolist() == [False, False, False, False, True]  # padding attends to itself only
    assert torch.equal(mask[2, 0], torch.eye(5, dtype=torch.bool))  # a filler row: all padding


def test_first_tokens_point_at_each_input_s_first_position():
    (at_row, at_position), inputs = passes.first_tokens([[2, 0], [1]], [3, 2, 4])
    assert at_row.tolist() == [0, 0, 1] and at_position.tolist() == [0, 4, 0] and inputs == [2, 0, 1]


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "bf16", "int8"])
def test_packed_rows_give_the_answers_of_a_window_a_row(precision, seed_text):
    loaded = models.load_model("ner", None, precision)
    packed, alone = dataclasses.replace(loaded, pack_rows=True), dataclasses.replace(loaded, pack_rows=False)
    assert passes.packs_inputs(packed) and not passes.packs_inputs(alone)
    docs = [ner.preprocess(packed, seed_text)]
    windows = docs[0].windows
    rows = passes.input_rows(packed, [len(w.input_ids) for w in windows])
    assert len(rows) < len(windows)  # the seed's sentences do share rows
    got, expected = ner.forward(packed, windows), ner.forward(alone, windows)
    largest = max(float(np.abs(a - b).max()) for a, b in zip(got, expected))
    # fp32: the same sums in another order; bf16: the rounding of other matrix shapes; int8: its
    # activations' scale spans a pass, so its probabilities move with what shares the pass (0.25 at
    # most over the seed on an AMD EPYC, no label changed; README "Precision"): the entities must hold
    assert largest < {"fp32": 1e-4, "bf16": 0.05, "int8": 0.5}[packed.precision], largest
    spans = lambda entities: [(e.start, e.end, e.label) for e in entities]
    entities = ner.postprocess(packed, docs[0], got)
    assert spans(entities) == spans(ner.postprocess(alone, docs[0], expected)) and len(entities) > 20


@pytest.mark.slow
def test_other_architectures_keep_a_window_a_row(monkeypatch):
    loaded = dataclasses.replace(models.load_model("ner", None, "fp32"), pack_rows=True)
    assert passes.packs_inputs(loaded)
    monkeypatch.setattr(loaded.model.config, "model_type", "roberta")  # positions from the padding id
    assert not passes.packs_inputs(loaded)
    assert passes.input_rows(loaded, [10, 20, 30]) == [[0], [1], [2]]


@pytest.mark.slow
def test_windows_share_rows_only_for_passes_side_by_side_on_tcmalloc():
    from pipeline import malloc

    assert not models.load_model("ner", None, "fp32").pack_rows
    for precision in ("bf16", "int8"):  # side by side where native: bf16 kernels, AVX512-VNNI
        fast = models.load_model("ner", None, precision)
        # measured: 1.18x on tcmalloc, 0.83x on glibc (bench/RESULTS.md "Windows packed into rows")
        assert fast.pack_rows == (fast.side_by_side and malloc.replacement_malloc() == "tcmalloc")


def seed_stance_texts(seed_text: str, seed_gold: dict) -> list[str]:
    """What the stance model reads for the seed's 13 gold quotes, and the seed's sentences."""
    quotes = [stance.stance_text(seed_text, Quote(q["start"], q["end"], q["text"]))
              for q in seed_gold["quotes"]]
    return quotes + [s for s in seed_text.split(". ") if len(s.split()) > 3]


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "auto"])
def test_packed_stance_texts_give_the_answers_of_a_text_a_row(precision, seed_text, seed_gold):
    loaded = models.load_model("stance", None, precision)
    packed, alone = dataclasses.replace(loaded, pack_rows=True), dataclasses.replace(loaded, pack_rows=False)
    assert passes.packs_inputs(packed) and not passes.packs_inputs(alone)
    encoded = stance.preprocess(packed, seed_stance_texts(seed_text, seed_gold))
    rows = passes.input_rows(packed, [len(e) for e in encoded])
    assert max(map(len, rows)) >= 2 and len(rows) < len(encoded)  # the texts do share rows
    got, expected = stance.forward(packed, encoded), stance.forward(alone, encoded)
    # fp32: the same sums in another order; bf16: the rounding of other matrix shapes
    largest = float(np.abs(stance.probabilities(got, 1.0) - stance.probabilities(expected, 1.0)).max())
    assert largest < (1e-4 if packed.precision == "fp32" else 0.05), largest
    if packed.precision == "fp32":
        assert (got.argmax(axis=1) == expected.argmax(axis=1)).all()


@pytest.mark.slow
def test_a_sequence_classifier_without_bert_s_pooler_keeps_a_text_a_row():
    loaded = models.load_model("stance", None, "fp32")
    loaded = dataclasses.replace(loaded, pack_rows=True, model=copy.deepcopy(loaded.model))  # others share the model
    assert passes.packs_inputs(loaded)
    loaded.model.bert.pooler = None  # its head would not read [CLS] as forward does
    assert not passes.packs_inputs(loaded)
    assert passes.input_rows(loaded, [10, 20]) == [[0], [1]]


@pytest.mark.slow
def test_packed_rows_run_fewer_rows_a_pass():
    loaded = models.load_model("ner", None, "fp32")
    packed = dataclasses.replace(loaded, pack_rows=True)
    rows = [60] * 134  # packed rows of about PACK_ROW_TOKENS each
    assert [len(b) for b in passes.pass_batches(packed, rows)] == [64, 64, 6]
    assert [len(b) for b in passes.pass_batches(loaded, rows)] == [passes.inner_batch_size(loaded)] * 8 + [6]
    assert [len(b) for b in passes.pass_batches(packed, rows, batch_size=128)] == [128, 6]  # a caller's size wins
    int8 = dataclasses.replace(packed, precision="int8")  # fp32 activations twice bf16's: a quarter of its rows a pass
    assert [len(b) for b in passes.pass_batches(int8, rows)] == [16] * 8 + [6]
