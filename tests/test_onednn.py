"""bf16 Linear layers packed for oneDNN once (pipeline.onednn) compute what nn.Linear computes."""
import copy

import pytest
import torch
from torch import nn

from pipeline import onednn, stance
from pipeline.models import LoadedModel, load_model
from pipeline.passes import attention_mask, padded


def _bf16_copy(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).to(torch.bfloat16)


def _logits(loaded: LoadedModel, model: nn.Module, texts: list[str]) -> torch.Tensor:
    encoded = stance.preprocess(loaded, texts)
    width = max(map(len, encoded))
    with torch.inference_mode():
        return model(input_ids=padded(encoded, width, 0), attention_mask=attention_mask([len(e) for e in encoded], width)).logits


def test_packed_layers_give_the_same_logits_bit_for_bit(seed_text):
    if not onednn.can_pack():
        pytest.skip("this torch / CPU cannot pack bf16 Linear weights for oneDNN")
    stance_model = load_model("stance", None, "fp32")
    plain = _bf16_copy(stance_model.model)
    packed = _bf16_copy(stance_model.model)
    linear_layers = sum(type(m) is nn.Linear for m in plain.modules())
    assert onednn.pack_linear_layers(packed) == linear_layers > 0
    assert not any(type(m) is nn.Linear for m in packed.modules())
    texts = [seed_text[:400], "Medvedev threatened retaliation.", "We call for talks and restraint."]
    expected = _logits(stance_model, plain, texts)
    assert torch.equal(_logits(stance_model, packed, texts), expected)
    # a copy (evaluate precision and with_precision copy models) is packed again and independent
    copied = copy.deepcopy(packed)
    assert torch.equal(_logits(stance_model, copied, texts), expected)
    # the bench's FLOP count reads in_features and out_features of the layers
    shape = lambda model: sum(m.in_features * m.out_features for m in model.modules() if hasattr(m, "out_features"))
    assert shape(packed) == shape(plain)


def test_only_bf16_linear_layers_are_packed():
    model = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 2))
    assert onednn.pack_linear_layers(model) == 0  # fp32: left as it is
    assert [type(m) for m in model] == [nn.Linear, nn.ReLU, nn.Linear]


def test_bf16_models_are_packed_only_where_bf16_is_native(monkeypatch):
    from pipeline import models

    fp32 = load_model("ner", None, "fp32")
    monkeypatch.setattr(models, "cpu_has_bf16", lambda: False)
    emulated = models.to_bf16(fp32)
    assert any(type(m) is nn.Linear for m in emulated.model.modules())
    if not onednn.can_pack():
        return
    monkeypatch.setattr(models, "cpu_has_bf16", lambda: True)
    native = models.to_bf16(fp32)
    assert not any(type(m) is nn.Linear for m in native.model.modules())
    assert any(type(m) is nn.Linear for m in fp32.model.modules())  # the fp32 model is left alone
