"""How default artifacts store their weights (pipeline.weights): fast, no model loaded."""

import pytest
import torch
from safetensors.torch import save_file

from pipeline.weights import COMPACT_FORMAT, WeightsError, decode_deltas, encode_deltas, read_weights, sha256_of, write_weights


def test_compact_weights_come_back_within_half_a_step_of_each_row():
    generator = torch.Generator().manual_seed(3)
    base = {"bert.layer.weight": torch.randn(8, 16, generator=generator), "bert.layer.bias": torch.randn(16, generator=generator)}
    trained = {name: value + 0.01 * torch.randn(value.shape, generator=generator) for name, value in base.items()}
    trained["classifier.weight"] = torch.randn(3, 16, generator=generator)  # a new head: no base to take a change from
    trained["bert.layer.weight"][2] = base["bert.layer.weight"][2]  # an untouched row
    stored = encode_deltas(trained, base, bits=6)
    assert stored["bert.layer.weight.delta"].dtype == torch.int8 and stored["bert.layer.weight.delta"].abs().max() <= 31
    assert stored["classifier.weight"].dtype == stored["bert.layer.bias"].dtype == torch.float16
    restored = decode_deltas(stored, base)
    assert set(restored) == set(trained)
    step = stored["bert.layer.weight.delta_scale"]
    assert ((restored["bert.layer.weight"] - trained["bert.layer.weight"]).abs() <= step / 2 + 1e-7).all()
    assert torch.equal(restored["bert.layer.weight"][2], base["bert.layer.weight"][2])
    assert torch.allclose(restored["classifier.weight"], trained["classifier.weight"], atol=2e-3)


def _small_state():
    generator = torch.Generator().manual_seed(5)
    base = {"bert.w": torch.randn(4, 8, generator=generator)}
    return base, {"bert.w": base["bert.w"] + 0.01 * torch.randn(4, 8, generator=generator), "head.b": torch.ones(3)}


def test_written_weights_read_back_and_name_their_base(tmp_path):
    base, trained = _small_state()
    config = write_weights(tmp_path, trained, base, base_sha256="ab" * 32)
    assert config["format"] == COMPACT_FORMAT and config["sha256"] == sha256_of(tmp_path / config["weights"])
    restored = read_weights(tmp_path / config["weights"], config, base, base_sha256="ab" * 32)
    assert set(restored) == set(trained) and torch.allclose(restored["bert.w"], trained["bert.w"], atol=1e-3)
    with pytest.raises(WeightsError, match="different base encoder"):
        read_weights(tmp_path / config["weights"], config, base, base_sha256="cd" * 32)


def test_a_corrupt_file_or_an_unknown_format_is_refused_with_a_reason(tmp_path):
    base, trained = _small_state()
    config = write_weights(tmp_path, trained, base, base_sha256="ab" * 32)
    weights = tmp_path / config["weights"]
    with pytest.raises(WeightsError, match="unknown weights format 'int4'"):
        read_weights(weights, {**config, "format": "int4"}, base, base_sha256="ab" * 32)
    weights.write_bytes(weights.read_bytes()[:-1])
    with pytest.raises(WeightsError, match="checksum mismatch"):
        read_weights(weights, config, base, base_sha256="ab" * 32)


def test_fp16_files_need_no_base(tmp_path):
    _, trained = _small_state()
    save_file({k: v.half() for k, v in trained.items()}, str(tmp_path / "w.safetensors"))
    config = {"weights": "w.safetensors", "sha256": sha256_of(tmp_path / "w.safetensors")}  # no "format": written before it existed
    restored = read_weights(tmp_path / "w.safetensors", config, base={}, base_sha256="")
    assert restored["head.b"].dtype == torch.float32 and torch.equal(restored["head.b"], trained["head.b"])


def test_the_base_encoder_checksum_is_pip_s_record_of_the_installed_file(tmp_path):
    from pipeline.models import BASE_ENCODER_DISTRIBUTION, base_encoder_weights
    from pipeline.weights import recorded_sha256

    installed = base_encoder_weights()
    recorded = recorded_sha256(BASE_ENCODER_DISTRIBUTION, installed)
    assert recorded == sha256_of(installed)  # the RECORD's urlsafe base64, as hex: what hashing the file gives
    # a file the package does not hold, or a package not installed: the caller hashes the file itself
    other = tmp_path / "model.safetensors"
    other.write_bytes(b"not the encoder")
    assert recorded_sha256(BASE_ENCODER_DISTRIBUTION, other) is None
    assert recorded_sha256("no-such-distribution-here", installed) is None
