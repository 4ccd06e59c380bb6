"""Prepared models on disk (pipeline.prepared): the same model as the usual load, and never a stale,
broken or half-filled one."""
import logging
import os
import time

import pytest
import torch

from pipeline import models, ner, prepared, stance

pytestmark = pytest.mark.slow

QUOTES = ["We will respond to any aggression with all the means at our disposal.",
          "We call on both sides to return to the negotiating table.", "The meeting is on Tuesday."]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NEWS_PIPELINE_MODEL_CACHE", str(tmp_path))
    monkeypatch.delenv(prepared.PREPARED_ENV, raising=False)
    return tmp_path / "prepared"


def _outputs(loaded: models.LoadedModel, seed_text: str):
    if loaded.task == "ner":
        return [(e.start, e.end, e.label, e.score) for e in ner.predict(loaded, [seed_text])[0]]
    return stance.predict(loaded, QUOTES + [seed_text[:400]])


@pytest.mark.parametrize("task,precision", [("ner", "int8"), ("stance", "int8"), ("stance", "bf16"), ("ner", "bf16")])
def test_a_prepared_model_is_the_model_the_usual_load_makes(cache, seed_text, caplog, task, precision):
    caplog.set_level(logging.INFO, logger="pipeline.models")
    usual = models._load_model(task, "", precision)  # writes the prepared file
    files = list(cache.glob(f"{task}-{precision}-*.safetensors"))
    assert len(files) == 1 and "written to" in caplog.text
    caplog.clear()
    again = models._load_model(task, "", precision)
    assert "weights from" in caplog.text
    for field in ("name", "precision", "labels", "side_by_side", "pack_rows", "max_pass_tokens", "temperature", "max_length"):
        assert getattr(again, field) == getattr(usual, field), field
    assert not again.model.training
    assert _outputs(again, seed_text) == _outputs(usual, seed_text)  # bit for bit
    kinds = lambda m: sorted(type(module).__name__ for module in m.modules())  # noqa: E731
    assert kinds(again.model) == kinds(usual.model)  # int8, smoothed, packed and fp32 layers where they were


def test_prepared_files_are_off_with_the_switch(cache, monkeypatch):
    monkeypatch.setenv(prepared.PREPARED_ENV, "0")
    models._load_model("stance", "", "int8")
    assert not cache.exists()


def test_a_corrupt_prepared_file_is_written_again(cache, seed_text, caplog):
    usual = models._load_model("stance", "", "int8")
    (path,) = cache.glob("*.safetensors")
    path.write_bytes(path.read_bytes()[:1000])  # cut short, as by a full disk
    caplog.set_level(logging.INFO)
    again = models._load_model("stance", "", "int8")
    assert "cannot be read" in caplog.text and "written to" in caplog.text
    assert _outputs(again, seed_text) == _outputs(usual, seed_text)
    assert prepared.read(path) is not None


def test_tensors_that_do_not_fit_the_model_are_refused(cache):
    loaded = models._load_model("ner", "", "int8")
    state = prepared.state_of(loaded.model, loaded.case_embeddings)

    def shell():
        config = models.default_config(loaded.labels)
        from transformers.initialization import no_init_weights

        with no_init_weights():
            model = models._auto_class("ner").from_config(config)
        return model, torch.nn.Embedding(len(models.CASE_CLASSES), config.hidden_size)

    prepared.restore(*shell(), state)  # the whole state fits
    missing = {k: v for k, v in state.items() if k != "bert.encoder.layer.0.output.LayerNorm.weight"}
    with pytest.raises(ValueError, match="missing.*LayerNorm"):
        prepared.restore(*shell(), missing)
    with pytest.raises(ValueError, match="unexpected"):
        prepared.restore(*shell(), {**state, "bert.extra.weight": torch.zeros(2)})
    with pytest.raises(ValueError, match="casing"):
        prepared.restore(shell()[0], None, state)
    int8_weight = next(k for k in state if k.endswith(".weight_int8"))
    scales = int8_weight.replace(".weight_int8", ".weight_scales")
    with pytest.raises(ValueError, match="lacks"):
        prepared.restore(*shell(), {k: v for k, v in state.items() if k != scales})
    with pytest.raises(ValueError, match="does not fit"):
        prepared.restore(*shell(), {**state, int8_weight: state[int8_weight][:, :10].contiguous()})


def test_the_file_name_changes_with_everything_its_tensors_depend_on(tmp_path):
    base = dict(directory=tmp_path, task="ner", precision="int8", artifact_config='{"sha256": "a"}', base_sha256="b")
    first = prepared.prepared_path(**base)
    assert prepared.prepared_path(**base) == first and first.parent == tmp_path
    for change in ({"task": "stance"}, {"precision": "bf16"}, {"artifact_config": '{"sha256": "c"}'}, {"base_sha256": "d"}):
        assert prepared.prepared_path(**{**base, **change}) != first, change


def test_the_newest_files_are_kept(tmp_path):
    for age in range(prepared.KEEP_FILES + 3):
        old = tmp_path / f"old-{age}.safetensors"
        old.write_bytes(b"x")
        os.utime(old, (time.time() - 100 - age, time.time() - 100 - age))
    assert prepared.write(tmp_path / "new.safetensors", {"w": torch.zeros(3)})
    kept = sorted(p.name for p in tmp_path.glob("*.safetensors"))
    assert len(kept) == prepared.KEEP_FILES and "new.safetensors" in kept and "old-0.safetensors" in kept
    assert not list(tmp_path.glob(".*partial"))


def test_an_unwritable_folder_only_warns(tmp_path, caplog):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    assert not prepared.write(blocked / "x.safetensors", {"w": torch.zeros(1)})
    assert prepared.PREPARED_ENV in caplog.text


def test_a_corrupt_artifact_fails_its_checksum_with_a_prepared_file_too(cache, tmp_path):
    import json
    import shutil

    copy = shutil.copytree(models.default_artifact_dir("ner"), tmp_path / "ner")
    models._load_model("ner", str(copy), "int8")
    assert list(cache.glob("ner-int8-*.safetensors"))  # the next load would find it
    weights = copy / json.loads((copy / "artifact.json").read_text())["weights"]
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(models.ModelLoadError, match="checksum"):
        models._load_model("ner", str(copy), "int8")


def test_a_file_another_user_owns_is_not_read(tmp_path, monkeypatch, caplog):
    path = tmp_path / "x.safetensors"
    assert prepared.write(path, {"w": torch.ones(2)})
    assert prepared.read(path)["w"].tolist() == [1.0, 1.0]
    monkeypatch.setattr(os, "getuid", lambda: path.stat().st_uid + 1)
    assert prepared.read(path) is None and "another user" in caplog.text


def test_the_folder_is_the_user_cache_unless_the_model_cache_is_set(tmp_path, monkeypatch):
    monkeypatch.delenv("NEWS_PIPELINE_MODEL_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert prepared.folder() == tmp_path / "xdg" / "news-pipeline" / "prepared"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert prepared.folder() == tmp_path / "home" / ".cache" / "news-pipeline" / "prepared"
    monkeypatch.setenv("NEWS_PIPELINE_MODEL_CACHE", str(tmp_path / "models"))
    assert prepared.folder() == tmp_path / "models" / "prepared"
