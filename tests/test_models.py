"""The default models: offline loading, offsets into the original text, windows, label sets, errors."""
import dataclasses
import gc
import json
import shutil

import numpy as np
import pytest
import torch

from pipeline import models, ner, passes, stance
from pipeline.models import ModelLoadError, default_artifact_dir, load_model

pytestmark = pytest.mark.slow


def test_defaults_load_offline_with_the_documented_labels(ner_model, stance_model):
    assert ner_model.name.startswith("default@") and stance_model.name.startswith("default@")
    assert {label.split("-")[-1] for label in ner_model.labels} == {"O", "PER", "ORG", "LOC", "MISC"}
    assert stance.label_columns(stance_model) == [0, 1, 2]
    assert ner_model.case_embeddings is not None  # the uncased encoder gets casing back


def test_entity_spans_index_the_original_cased_text(ner_model):
    text = "“We won’t back down,” said José Martí of the Ministère des Affaires étrangères in Paris on Tuesday."
    entities = ner.predict(ner_model, [text])[0]
    assert entities, "no entities found"
    for e in entities:
        assert text[e.start:e.end] == e.text
        assert e.label in ner.LABELS and 0 < e.score <= 1
    by_text = {e.text: e.label for e in entities}
    assert by_text.get("José Martí") == "PER"
    assert by_text.get("Paris") == "LOC"


def test_names_with_initials_and_titles_are_one_person_each(ner_model):
    text = ("Former president George W. Bush said on Monday that Sen. John McCain was right. "
            "Mr. Trump met Gov. Andrew M. Cuomo and Dr. Anthony S. Fauci in St. Louis.")
    entities = {(e.text, e.label) for e in ner.predict(ner_model, [text])[0]}
    people = {name for name, label in entities if label == "PER"}
    # split at the stops, these came out as "George W" and "Bush", "Andrew M." and "Cuomo", "Sen" as MISC
    assert {"George W. Bush", "John McCain", "Trump", "Andrew M. Cuomo", "Anthony S. Fauci"} <= people
    assert not {name for name, _ in entities if name.rstrip(".").lower() in ner.PERSON_TITLES}
    assert ("St. Louis", "LOC") in entities


def test_an_entity_on_a_window_boundary_is_found_once(ner_model):
    filler = "the committee met again and discussed the budget for the coming year . "
    text = filler * 12 + "Vladimir Putin spoke . " + filler * 12
    wide = ner.predict(ner_model, [text])[0]
    for window_tokens in (24, 33, 40, 57):  # narrow windows put the name on many different boundaries
        narrow = ner.predict(ner_model, [text], window_tokens=window_tokens, stride_tokens=8)[0]
        putins = [e for e in narrow if "Putin" in e.text]
        assert [(e.start, e.end) for e in putins] == [(text.index("Vladimir"), text.index(" spoke"))], window_tokens
        assert [(e.start, e.end, e.label) for e in narrow] == [(e.start, e.end, e.label) for e in wide]


def test_skipping_nameless_sentences_changes_no_entity(seed_text):
    fp32 = load_model("ner", None, "fp32")  # int8 results move with what shares a pass; fp32's do not
    found = {}
    for skip in (False, True):
        doc = ner.preprocess(fp32, seed_text, skip_nameless=skip)
        found[skip] = len(doc.windows), [(e.start, e.end, e.label) for e in ner.postprocess(fp32, doc, ner.forward(fp32, doc.windows))]
    assert found[True][0] < found[False][0] - 5  # "she added", the newsletter's lines: 25 windows -> 17
    assert found[True][1] == found[False][1] and len(found[True][1]) > 50


def test_long_articles_are_split_into_overlapping_windows(ner_model):
    text = "Officials in Berlin said the talks with Moscow would continue. " * 200
    doc = ner.preprocess(ner_model, text)
    assert len(doc.windows) > 5
    assert all(len(w.input_ids) <= ner.DEFAULT_WINDOW_TOKENS for w in doc.windows)
    entities = ner.postprocess(ner_model, doc, ner.forward(ner_model, doc.windows))
    assert sum(e.text == "Berlin" for e in entities) == 200


def test_cached_word_pieces_are_what_the_tokenizer_gives(ner_model, seed_text, monkeypatch):
    words = [seed_text[s:e] for s, e in ner.split_words(seed_text)] + ["\u200b", "Zelenskyy", "x" * 400]
    encoding = ner_model.tokenizer(words, is_split_into_words=True, add_special_tokens=False)
    expected = [[] for _ in words]
    for token_id, word in zip(encoding["input_ids"], encoding.word_ids()):
        expected[word].append(token_id)
    expected = [tuple(ids[: ner.MAX_SUBWORDS_PER_WORD]) or (ner_model.tokenizer.unk_token_id,) for ids in expected]
    monkeypatch.setattr(ner_model, "word_pieces", {})
    assert ner.word_pieces(ner_model, words) == expected  # tokenized
    assert "Zelenskyy" in ner_model.word_pieces and ner_model.word_pieces["\u200b"] == (ner_model.tokenizer.unk_token_id,)
    assert "x" * 400 not in ner_model.word_pieces  # long "words" are tokenized each time, not kept
    del words[-1], expected[-1]
    calls = []
    monkeypatch.setattr(ner_model, "tokenizer", lambda *a, **k: calls.append(a))
    assert ner.word_pieces(ner_model, words) == expected and calls == []  # from the cache, no tokenizer call


def test_the_word_piece_cache_is_bounded(ner_model, monkeypatch):
    monkeypatch.setattr(ner_model, "word_pieces", {})
    monkeypatch.setattr(ner, "WORD_PIECE_CACHE_WORDS", 50)
    for start in range(0, 200, 40):
        ner.word_pieces(ner_model, [f"word{i}" for i in range(start, start + 40)])
        assert len(ner_model.word_pieces) <= 50


def test_stance_token_ids_are_what_the_tokenizer_gives(stance_model, seed_text, monkeypatch):
    texts = [seed_text, "Putin accused the U.S. of escalation.", "", "\u200b\u202e\x00", "word " * 400]
    expected = stance_model.tokenizer(texts, truncation=True, max_length=stance.DEFAULT_MAX_TOKENS)["input_ids"]
    encoded = stance.preprocess(stance_model, texts)
    assert encoded == expected and len(encoded[0]) == len(encoded[-1]) == stance.DEFAULT_MAX_TOKENS
    assert stance.preprocess(stance_model, texts, max_tokens=16) == [ids[:15] + ids[-1:] if len(ids) > 16 else ids
                                                                     for ids in expected]
    # a call through transformers resets the shared backend's truncation; the encoder is a copy
    stance_model.tokenizer(texts, truncation=True, max_length=8)
    assert stance.preprocess(stance_model, texts) == expected
    # a slow tokenizer (no Rust backend) goes through transformers
    monkeypatch.setattr(stance_model, "truncating_encoders", {})
    monkeypatch.setattr(type(stance_model.tokenizer), "is_fast", property(lambda self: False))
    assert stance.preprocess(stance_model, texts) == expected and stance_model.truncating_encoders == {}


def test_empty_and_odd_texts(ner_model, stance_model):
    assert ner.predict(ner_model, ["", "   ", "\u200b\u202e\x00"]) == [[], [], []]
    assert stance.predict(stance_model, []) == []
    [scores] = stance.predict(stance_model, ["x" * 5000])
    assert abs(scores.p_escalatory + scores.p_deescalatory + scores.p_neutral - 1) < 1e-5


def test_stance_on_first_person_statements(stance_model):
    scores = stance.predict(stance_model, [
        "We will strike back with everything we have if they cross that line.",
        "We are ready to sit down at the table and talk about a ceasefire.",
    ])
    assert [s.label for s in scores] == ["escalatory", "deescalatory"]
    for s in scores:
        assert abs(s.escalation_score - (s.p_escalatory - s.p_deescalatory)) < 1e-9


def test_unknown_model_gives_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError) as info:
        load_model("ner", "no-such-org/no-such-model")
    message = str(info.value)
    assert "--ner_model" in message and "default" in message
    assert "Traceback" not in message
    with pytest.raises(ModelLoadError, match="--stance_model"):
        load_model("stance", str(tmp_path))  # a folder that holds no model


def test_a_corrupt_artifact_fails_its_checksum(tmp_path):
    copy = tmp_path / "ner"
    shutil.copytree(default_artifact_dir("ner"), copy)
    weights = copy / json.loads((copy / "artifact.json").read_text())["weights"]
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="checksum"):
        load_model("ner", str(copy))


def _fp16_artifact_of_the_default(folder):
    """The default NER artifact written the way artifacts were before the compact format."""
    from safetensors.torch import save_file

    from pipeline.models import ARTIFACT_CONFIG, base_encoder_sha256, build_default_architecture, pretrained_parameters
    from pipeline.weights import read_weights, sha256_of

    source = default_artifact_dir("ner")
    config = json.loads((source / ARTIFACT_CONFIG).read_text())
    _, model, _ = build_default_architecture("ner", config["labels"], case_features=False)
    state = read_weights(source / config["weights"], config, pretrained_parameters(model), base_encoder_sha256())
    folder.mkdir()
    save_file({k: v.half().contiguous() for k, v in state.items()}, str(folder / "weights.safetensors"))
    for key in ("format", "base_sha256", "int8_ranges"):
        config.pop(key)
    config.update(weights="weights.safetensors", sha256=sha256_of(folder / "weights.safetensors"))
    (folder / ARTIFACT_CONFIG).write_text(json.dumps(config))
    return folder


def test_fp16_artifacts_still_load_and_compact_to_the_same_model(tmp_path, seed_text):
    from pipeline.models import compact_artifact

    old = _fp16_artifact_of_the_default(tmp_path / "fp16")
    before = load_model("ner", str(old), "fp32")
    folder = shutil.copytree(old, tmp_path / "compact")
    compact = compact_artifact(folder)
    assert compact.name == "weights.safetensors.zst" and not (folder / "weights.safetensors").exists()
    assert compact.stat().st_size < 10e6
    after = load_model("ner", str(folder), "fp32")
    assert after.name != before.name  # a new checksum: rows say which file made them
    found = [[(e.start, e.end, e.label) for e in ner.predict(m, [seed_text])[0]] for m in (before, after)]
    assert found[0] and found[0] == found[1]
    with pytest.raises(ValueError, match="already"):
        compact_artifact(folder)


def test_an_artifact_missing_a_trained_parameter_is_refused(tmp_path):
    # the loader fills an uninitialised model: a missing head must fail, not run on garbage memory
    from safetensors.torch import load_file, save_file

    from pipeline.weights import sha256_of

    folder = _fp16_artifact_of_the_default(tmp_path / "fp16")
    state = load_file(str(folder / "weights.safetensors"))
    del state["classifier.weight"]
    save_file(state, str(folder / "weights.safetensors"))
    config = json.loads((folder / "artifact.json").read_text())
    config["sha256"] = sha256_of(folder / "weights.safetensors")
    (folder / "artifact.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match=r"lack parameters of the model: \['classifier.weight'\]"):
        load_model("ner", str(folder))


def test_the_loaded_default_computes_what_from_pretrained_plus_its_weights_computes(seed_text):
    from pipeline.models import ARTIFACT_CONFIG, base_encoder_sha256, build_default_architecture, pretrained_parameters
    from pipeline.weights import read_weights

    source = default_artifact_dir("stance")
    config = json.loads((source / ARTIFACT_CONFIG).read_text())
    tokenizer, reference, _ = build_default_architecture("stance", config["labels"], case_features=False)
    reference.load_state_dict(read_weights(source / config["weights"], config, pretrained_parameters(reference),
                                           base_encoder_sha256()), strict=False)
    loaded = load_model("stance", None, "fp32")
    expected, got = reference.state_dict(), loaded.model.state_dict()
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[name], got[name]) for name in expected)  # the same weights, bit for bit
    batch = tokenizer(seed_text.split("\n\n")[:8], padding=True, truncation=True, return_tensors="pt")
    with torch.inference_mode():
        # Logits to within float rounding, not bit for bit: on an AVX-512 CPU (AMD EPYC, 2026-12-04) the
        # same weights at another address took another kernel path and moved a logit by 2.4e-7.
        torch.testing.assert_close(loaded.model(**batch).logits, reference.eval()(**batch).logits, rtol=0, atol=1e-5)


def test_a_compact_artifact_made_on_another_base_encoder_is_refused(tmp_path):
    copy = tmp_path / "ner"
    shutil.copytree(default_artifact_dir("ner"), copy)
    config = json.loads((copy / "artifact.json").read_text())
    config["base_sha256"] = "0" * 64
    (copy / "artifact.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="different base encoder"):
        load_model("ner", str(copy))


def test_training_smoke_run_writes_a_loadable_artifact(tmp_path):
    from conftest import shared_path
    from pipeline.train.ner import train_ner

    data = shared_path("data", "conll2003")
    result = train_ner(str(data), str(tmp_path / "ner"), epochs=1, limit=16, batch_size=8)
    loaded = load_model("ner", str(tmp_path / "ner"))
    assert result["best_epoch"] == 1 and loaded.case_embeddings is not None
    card = json.loads((tmp_path / "ner" / "artifact.json").read_text())
    assert card["training"]["data"]["train_sha256"] and card["training"]["seed"] == 13
    assert card["int8_ranges"]["calibration"] == "eng.train, first 2000 sentences"


@pytest.mark.parametrize("precision", ["int8", "bf16"])
def test_ner_in_each_fast_precision_finds_the_seed_people_as_fp32_does(ner_model, seed_text, precision):
    from pipeline.models import resolve_precision

    fp32, fast = load_model("ner", None, "fp32"), load_model("ner", None, precision)  # bf16 is emulated without bf16 kernels: slow but right
    assert (fast.precision, fp32.precision) == (precision, "fp32")
    assert fast.name == fp32.name + "+" + precision  # the rows say which precision made them
    assert ner_model.precision == resolve_precision("ner", "auto")  # the default: bf16 with AMX, else int8
    assert load_model("ner", None) is ner_model  # one copy per process and precision
    people = [{(e.start, e.end) for e in ner.predict(m, [seed_text])[0] if e.label == "PER"} for m in (fp32, fast)]
    assert people[0] and people[0] == people[1]
    with pytest.raises(ValueError, match="precision"):
        load_model("ner", None, "fp16")


def test_stance_classifies_each_distinct_text_once(stance_model, monkeypatch):
    seen = []
    forward = stance.forward
    monkeypatch.setattr(stance, "forward", lambda loaded, encoded, *a: seen.append(len(encoded)) or forward(loaded, encoded, *a))
    texts = ["We will strike back.", "We are ready to talk.", "We will strike back."]
    scores = stance.predict(stance_model, texts)
    assert seen == [2]
    assert scores[0] == scores[2] and scores[0] != scores[1]
    assert scores[0].label == "escalatory" and scores[1].label == "deescalatory"


def test_auto_precision_picks_bf16_only_where_the_cpu_has_it(monkeypatch):
    import pipeline.models as models

    monkeypatch.setattr(models, "cpu_has_bf16", lambda: True)
    monkeypatch.setattr(models, "cpu_has_amx", lambda: True)  # Intel Sapphire Rapids
    assert [models.resolve_precision(t, "auto") for t in ("ner", "stance")] == ["bf16", "bf16"]
    monkeypatch.setattr(models, "cpu_has_amx", lambda: False)  # AVX512-BF16 alone: AMD Zen 4
    assert [models.resolve_precision(t, "auto") for t in ("ner", "stance")] == ["int8", "bf16"]
    monkeypatch.setattr(models, "cpu_has_bf16", lambda: False)
    assert [models.resolve_precision(t, None) for t in ("ner", "stance")] == ["int8", "int8"]
    assert models.resolve_precision("stance", "fp32") == "fp32"
    assert models.resolve_precision("ner", "bf16") == "bf16"  # asked for: kept


def test_stance_in_int8_keeps_its_feed_forward_outputs_in_fp32_and_its_answers():
    fp32, int8 = load_model("stance", None, "fp32"), load_model("stance", None, "int8")
    assert int8.name == fp32.name + "+int8" and int8.precision == "int8"
    kept = {name for name, m in int8.model.named_modules() if type(m) is torch.nn.Linear}
    assert kept == {f"bert.encoder.layer.{i}.output.dense" for i in range(6)} | {"classifier"}
    assert all(type(m) is torch.nn.Linear for m in fp32.model.modules() if isinstance(m, torch.nn.Linear))  # untouched
    texts = ["We will strike back.", "We are ready to talk.", "The meeting is on Tuesday.",
             "Any attack on our territory will be met with a crushing response.", "We call on both sides to show restraint."]
    assert [s.label for s in stance.predict(int8, texts)] == [s.label for s in stance.predict(fp32, texts)]


def test_bf16_gives_fp32_logits_and_the_same_stances():
    fp32 = load_model("stance", None, "fp32")
    bf16 = load_model("stance", None, "bf16")  # emulated on CPUs without bf16 kernels: slow but right
    assert bf16.name == fp32.name + "+bf16" and bf16.precision == "bf16"
    assert {p.dtype for p in bf16.model.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in fp32.model.parameters()} == {torch.float32}  # the fp32 copy is untouched
    texts = ["We will strike back.", "We are ready to talk.", "The meeting is on Tuesday."]
    assert [s.label for s in stance.predict(bf16, texts)] == [s.label for s in stance.predict(fp32, texts)]


def test_length_batches_put_the_rows_over_a_multiple_first():
    from pipeline.passes import length_batches

    lengths = [9, 3, 7, 1, 5, 2, 8]  # sorted: indices 3, 5, 1, 4, 2, 6, 0
    assert length_batches(lengths, 2) == [[3, 5], [1, 4], [2, 6], [0]]
    # 7 rows, multiples of 2: the shortest row alone, then pairs; the short batch stays at the long end
    assert length_batches(lengths, 4, rows_multiple=2) == [[3], [5, 1, 4, 2], [6, 0]]
    assert length_batches(lengths[:6], 4, rows_multiple=2) == length_batches(lengths[:6], 4) == [[3, 5, 1, 4], [2, 0]]
    assert length_batches([], 2, rows_multiple=8) == []


def test_length_batches_split_only_the_batches_over_the_token_cap():
    from pipeline.passes import MAX_PASS_TOKENS, length_batches

    # 16 short rows and 16 long ones, 8 rows a batch: the long batches hold 8 x 100 tokens
    lengths = [10] * 16 + [100] * 16
    uncapped = length_batches(lengths, 8, rows_multiple=2)
    assert [len(b) for b in uncapped] == [8, 8, 8, 8]
    capped = length_batches(lengths, 8, rows_multiple=2, max_tokens=500)
    # short batches (80 tokens) stay whole; long ones split into 4 rows (400 tokens), a multiple of 2
    assert [len(b) for b in capped] == [8, 8, 4, 4, 4, 4]
    assert sorted(i for b in capped for i in b) == list(range(32))  # every row once
    assert all(len(b) * max(lengths[i] for i in b) <= 500 for b in capped)
    # a row longer than the cap still runs, with rows_multiple rows
    assert [len(b) for b in length_batches([1000] * 4, 4, rows_multiple=2, max_tokens=500)] == [2, 2]
    # the pipeline's cap: 64 rows of 256 tokens (a pass of the longest NER windows) become 32-row passes
    assert [len(b) for b in length_batches([256] * 64, 64, rows_multiple=8, max_tokens=MAX_PASS_TOKENS)] == [32, 32]


def test_bf16_passes_have_rows_in_multiples_of_8_and_filler_rows_change_nothing(monkeypatch):
    from pipeline.models import LoadedModel
    from pipeline.passes import filler_rows

    fp32 = load_model("stance", None, "fp32")
    assert [filler_rows(fp32, n) for n in (1, 16, 17)] == [0, 0, 0]  # fp32 and int8 keep no per-shape kernels
    bf16 = load_model("stance", None, "bf16")  # emulated on CPUs without bf16 kernels: slow but right
    bf16 = dataclasses.replace(bf16, pack_rows=False)  # a text a row, on either malloc (tests/test_row_packing.py packs)
    assert [filler_rows(bf16, n) for n in (1, 8, 13, 64)] == [7, 0, 3, 0]
    shapes, masks = [], []
    forward = LoadedModel.forward
    monkeypatch.setattr(LoadedModel, "forward", lambda self, ids, mask, *a: shapes.append(tuple(ids.shape)) or masks.append(mask) or forward(self, ids, mask, *a))
    texts = ["We will strike back.", "We are ready to talk.", "The meeting is on Tuesday.", "No.",
             "Any attack on our territory will be met with a crushing response.", "We call on both sides to show restraint.",
             "The sanctions are an act of economic war and we will answer them.", "Talks resume in Geneva next week.",
             "We have no intention of attacking anyone.", "Our troops will stay as long as it takes.", "Thank you."]
    encoded = stance.preprocess(bf16, texts)
    filled = stance.forward(bf16, encoded, batch_size=8)  # 11 texts: the 3 shortest and 5 filler rows, then 8
    assert sorted(shapes) == [(8, 8), (8, 16)]  # sorted: bf16 passes may run side by side (passes.run_passes)
    short = next(mask for mask in masks if mask.shape[1] == 8)
    assert short[3:].sum(dim=1).tolist() == [1] * 5  # filler rows attend to their first position only
    monkeypatch.setitem(passes.PAD_ROWS_TO, "bf16", 1)
    shapes.clear()
    exact = stance.forward(bf16, encoded, batch_size=8)
    assert sorted(rows for rows, _ in shapes) == [3, 8]
    assert filled.shape == exact.shape == (11, 3)
    assert np.allclose(filled, exact, atol=0.05) and (filled.argmax(1) == exact.argmax(1)).all()


def test_padded_batches():
    from pipeline.passes import attention_mask, padded

    assert padded([[5, 6, 7], [8]], 4, 0).tolist() == [[5, 6, 7, 0], [8, 0, 0, 0]]
    assert padded([[5, 6, 7], [8]], 4, 0).dtype == torch.long
    assert padded([[5, 6, 7], [], [9]], 3, -1).tolist() == [[5, 6, 7], [-1, -1, -1], [9, -1, -1]]
    assert padded([], 4, 0).shape == (0, 4)
    assert attention_mask([3, 1], 4).tolist() == [[1, 1, 1, 0], [1, 0, 0, 0]]


@pytest.mark.parametrize("handler", [ner.NerModelHandler, stance.StanceModelHandler])
def test_a_worker_takes_what_it_loaded_out_of_the_collectors_sight(handler):
    # full collections walked every object of Beam, torch and the models, a third of a second each
    gc.unfreeze()
    thresholds = gc.get_threshold()
    assert gc.get_freeze_count() == 0
    handler().load_model()
    assert gc.get_freeze_count() > 10_000
    assert gc.get_threshold() == (*thresholds[:2], models.FULL_COLLECTION_EVERY)
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_checking_the_models_at_start_up_takes_them_out_of_the_collectors_sight(tmp_path):
    # else the next full collection walks them while Beam builds the graph: 0.25 s of a 100-article run
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline.options import NewsPipelineOptions
    from pipeline.run import check_models

    gc.unfreeze()
    thresholds = gc.get_threshold()
    try:
        check_models(PipelineOptions(["--input", str(tmp_path), "--output", str(tmp_path)]).view_as(NewsPipelineOptions))
        assert gc.get_freeze_count() > 10_000
        assert gc.get_threshold() == (*thresholds[:2], models.FULL_COLLECTION_EVERY)
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def test_both_models_share_one_tokenizer_and_the_stance_truncation_stays_its_own(ner_model, stance_model, seed_text):
    assert ner_model.tokenizer is stance_model.tokenizer  # loaded once a process
    long_text = " ".join([seed_text] * 3)
    stance.predict(stance_model, [long_text])  # encodes through its own truncating copy
    words = long_text.split()
    ids = ner_model.tokenizer(words, is_split_into_words=True, add_special_tokens=False)["input_ids"]
    assert len(ids) > 3 * stance_model.max_length  # not truncated for the NER model
    found = [(e.start, e.end) for e in ner.predict(ner_model, [long_text])[0]]
    assert max(end for _, end in found) > 2 * len(seed_text)  # entities in the last copy too
