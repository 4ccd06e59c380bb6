"""Several NER windows a row (ner.window_rows, models.pack_rows, ner.block_attention): every window
once, rows within their capacity, and the same answers as a window a row."""
import dataclasses

import numpy as np
import pytest
import torch

from pipeline import models, ner


def test_pack_rows_lays_every_input_once_within_the_capacity():
    lengths = [30, 100, 20, 60, 128, 200, 10, 40, 90]
    rows = models.pack_rows(lengths, 128)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= 128 for row in rows if len(row) > 1)
    assert [5] in rows and [4] in rows  # longer than the room left anywhere: a row of their own
    # best fit, longest first: 100 takes 20; 90 takes 30; 60 takes 40 and 10 ... 6 rows at most
    assert len(rows) <= 6
    assert models.pack_rows([], 128) == []
    assert models.pack_rows([5, 5, 5], 4) == [[0], [1], [2]]  # each over the capacity: one a row


def test_block_attention_keeps_each_window_to_itself():
    lengths = [3, 2, 4]
    mask, positions = ner.block_attention([[0, 1], [2]], lengths, width=5, fill=1)
    assert mask.shape == (3, 1, 5, 5) and positions.shape == (3, 5)
    first = mask[0, 0]
    assert first[:3, :3].all() and first[3:5, 3:5].all()  # window 0, then window 1
    assert not first[:3, 3:].any() and not first[3:, :3].any()
    assert positions[0].tolist() == [0, 1, 2, 0, 1]
    second = mask[1, 0]
    assert second[:4, :4].all() and not second[:4, 4].any()
    assert second[4].tolist() == [False, False, False, False, True]  # padding attends to itself only
    assert torch.equal(mask[2, 0], torch.eye(5, dtype=torch.bool))  # a filler row: all padding


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "auto"])
def test_packed_rows_give_the_answers_of_a_window_a_row(precision, seed_text):
    loaded = models.load_model("ner", None, precision)
    packed, alone = dataclasses.replace(loaded, pack_rows=True), dataclasses.replace(loaded, pack_rows=False)
    assert ner.packs_windows(packed) and not ner.packs_windows(alone)
    docs = [ner.preprocess(packed, seed_text)]
    windows = docs[0].windows
    rows = ner.window_rows(packed, [len(w.input_ids) for w in windows])
    assert len(rows) < len(windows)  # the seed's sentences do share rows
    got, expected = ner.forward(packed, windows), ner.forward(alone, windows)
    largest = max(float(np.abs(a - b).max()) for a, b in zip(got, expected))
    # fp32: the same sums in another order; bf16: the rounding of other matrix shapes
    assert largest < (1e-4 if packed.precision == "fp32" else 0.05), largest
    spans = lambda entities: [(e.start, e.end, e.label) for e in entities]
    entities = ner.postprocess(packed, docs[0], got)
    assert spans(entities) == spans(ner.postprocess(alone, docs[0], expected)) and len(entities) > 20


@pytest.mark.slow
def test_other_architectures_keep_a_window_a_row(monkeypatch):
    loaded = dataclasses.replace(models.load_model("ner", None, "fp32"), pack_rows=True)
    assert ner.packs_windows(loaded)
    monkeypatch.setattr(loaded.model.config, "model_type", "roberta")  # positions from the padding id
    assert not ner.packs_windows(loaded)
    assert ner.window_rows(loaded, [10, 20, 30]) == [[0], [1], [2]]


@pytest.mark.slow
def test_windows_share_rows_only_for_bf16_passes_side_by_side_on_tcmalloc():
    from pipeline import malloc

    assert not models.load_model("ner", None, "fp32").pack_rows and not models.load_model("ner", None, "int8").pack_rows
    bf16 = models.load_model("ner", None, "bf16")
    # measured: 1.18x on tcmalloc, 0.83x on glibc (bench/README.md "Windows packed into rows")
    assert bf16.pack_rows == (bf16.side_by_side and malloc.replacement_malloc() == "tcmalloc")
