"""pipeline.int8: calibration ranges, SmoothQuant input scales, int8 dynamic quantization."""
import json

import pytest
import torch
from torch import nn

from pipeline import int8


def layer_with_an_outlier_channel(seed: int = 0) -> tuple[nn.Linear, torch.Tensor]:
    torch.manual_seed(seed)
    layer = nn.Linear(64, 64)
    x = torch.randn(256, 64)
    x[:, 3] *= 40  # one channel far larger than the rest, as in the encoders' feed-forward inputs
    return layer, x


def test_input_ranges_keep_each_channels_largest_value_over_all_calls() -> None:
    model = nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 1))
    batches = [torch.tensor([[1.0, -5.0, 0.5]]), torch.tensor([[-2.0, 1.0, 0.25], [0.0, 0.0, -3.0]])]
    ranges = int8.input_ranges(model, lambda: [model(b) for b in batches])
    assert set(ranges) == {"0", "2"}
    assert ranges["0"].tolist() == [2.0, 5.0, 3.0]
    assert ranges["2"].shape == (2,)
    assert not model._forward_pre_hooks and not model[0]._forward_pre_hooks  # hooks removed
    with pytest.raises(ValueError, match="no Linear"):
        int8.input_ranges(model, lambda: None)


def test_smoothing_brings_int8_closer_to_fp32_on_an_outlier_channel() -> None:
    layer, x = layer_with_an_outlier_channel()
    model = nn.Sequential(layer)
    with torch.inference_mode():
        exact = model(x)
        plain = int8.quantized(model, None)(x)
        smoothed_model = int8.quantized(model, int8.input_ranges(model, lambda: model(x)))
        smoothed = smoothed_model(x)
    assert isinstance(smoothed_model[0], int8.SmoothedLinear)
    plain_error, smoothed_error = (exact - plain).abs().mean(), (exact - smoothed).abs().mean()
    assert smoothed_error < 0.5 * plain_error
    assert torch.equal(model[0].weight, layer.weight)  # the original model is left as it was


def test_layers_kept_in_fp32_are_neither_quantized_nor_smoothed() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.GELU(), nn.Linear(32, 8), nn.Linear(8, 3))  # up, down, a head
    x = torch.randn(16, 8)
    ranges = int8.input_ranges(model, lambda: model(x))
    mixed = int8.quantized(model, ranges, keep_fp32=int8.narrows)
    assert isinstance(mixed[0], int8.SmoothedLinear) and not isinstance(mixed[0].linear, nn.Linear)  # int8
    assert type(mixed[2]) is nn.Linear and type(mixed[3]) is nn.Linear  # 32 -> 8 and 8 -> 3 narrow: fp32
    assert torch.equal(mixed[2].weight, model[2].weight)  # as they were: no smoothing folded in
    assert int8.int8_fraction(mixed) == pytest.approx(256 / (256 + 256 + 24))
    assert int8.int8_fraction(int8.quantized(model, ranges)) == 1.0 and int8.int8_fraction(model) == 0.0
    with torch.inference_mode():
        assert (mixed(x) - model(x)).abs().max() < 0.05


def test_in_place_converts_the_model_itself() -> None:
    model = nn.Sequential(nn.Linear(4, 4))
    copy = int8.quantized(model, None)
    assert type(model[0]) is nn.Linear and copy is not model
    same = int8.quantized(model, None, in_place=True)
    assert same is model and type(model[0]) is not nn.Linear


def test_ranges_of_the_wrong_shape_are_refused() -> None:
    model = nn.Sequential(nn.Linear(4, 2))
    with pytest.raises(ValueError, match="takes 4 inputs"):
        int8.quantized(model, {"0": torch.ones(3)})


def test_ranges_round_trip_and_a_corrupt_file_is_refused(tmp_path) -> None:
    ranges = {"a.dense": torch.tensor([1.0, 2.5]), "b": torch.tensor([0.5])}
    entry = int8.save_ranges(tmp_path, ranges)
    loaded = int8.load_ranges(tmp_path, entry)
    assert set(loaded) == set(ranges) and all(torch.equal(loaded[k], ranges[k]) for k in ranges)
    (tmp_path / entry["file"]).write_bytes((tmp_path / entry["file"]).read_bytes()[:-4])
    with pytest.raises(ValueError, match="checksum"):
        int8.load_ranges(tmp_path, entry)


@pytest.mark.slow
def test_the_default_artifacts_carry_ranges_and_int8_uses_them() -> None:
    from pipeline import models

    for task in ("ner", "stance"):
        folder = models.default_artifact_dir(task)
        entry = json.loads((folder / models.ARTIFACT_CONFIG).read_text())["int8_ranges"]
        assert "train" in entry["calibration"]  # calibrated on training text, never dev
        loaded = models.load_model(task, None, "int8")
        smoothed = [m for m in loaded.model.modules() if isinstance(m, int8.SmoothedLinear)]
        linears = [m for m in models.load_model(task, None, "fp32").model.modules() if isinstance(m, nn.Linear)]
        kept = [m for m in loaded.model.modules() if type(m) is nn.Linear]  # INT8_KEEPS_FP32
        assert len(smoothed) + len(kept) == len(linears)
        # the stance model keeps its 6 feed-forward output layers and its head in fp32; NER runs whole in int8
        assert len(kept) == {"ner": 0, "stance": 7}[task], task


@pytest.mark.slow
def test_an_artifact_without_ranges_runs_plain_int8_and_says_so(tmp_path, caplog) -> None:
    import shutil

    from pipeline import models

    folder = shutil.copytree(models.default_artifact_dir("stance"), tmp_path / "stance")
    config = json.loads((folder / models.ARTIFACT_CONFIG).read_text())
    (folder / config.pop("int8_ranges")["file"]).unlink()
    (folder / models.ARTIFACT_CONFIG).write_text(json.dumps(config))
    with caplog.at_level("WARNING", logger="pipeline.models"):
        loaded = models.load_model("stance", str(folder), "int8")
    assert "no int8 calibration ranges" in caplog.text
    assert not any(isinstance(m, int8.SmoothedLinear) for m in loaded.model.modules())
    assert loaded.model(input_ids=torch.tensor([[101, 2057, 2097, 102]])).logits.shape == (1, 3)


@pytest.mark.slow
def test_a_corrupt_ranges_file_is_a_clear_load_error(tmp_path) -> None:
    import shutil

    from pipeline import models

    folder = shutil.copytree(models.default_artifact_dir("stance"), tmp_path / "stance")
    (folder / int8.RANGES_FILE).write_bytes(b"not safetensors")
    with pytest.raises(models.ModelLoadError, match="int8 ranges: checksum mismatch"):
        models.load_model("stance", str(folder), "fp32")
