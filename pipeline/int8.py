"""Int8 inference: every Linear layer dynamically quantized (int8 weights with per-channel scales,
activations quantized on the fly), after SmoothQuant's per-channel input scaling.

Dynamic quantization gives each input tensor one int8 scale, set by its largest value. In these
BERT-style encoders a few input channels of the feed-forward layers run 10 to 15 times larger
than the rest (max |x| about 30 against a median of 2), so most values got only a few int8
steps. SmoothQuant (Xiao et al., 2023) divides each input channel by
``s = max|x|^alpha / max|w|^(1 - alpha)`` and multiplies the weights' matching column by ``s``:
the same product in exact arithmetic, with the outliers moved into weights, which have
per-channel scales. ``max|x|`` comes from calibration texts run once in fp32 and is stored with
the artifact (``int8_ranges.safetensors``, written by ``python -m pipeline calibrate`` and by
``train``).

Measured with ``python -m pipeline evaluate precision`` on the PolNeAR train texts and the
evaluate commands (README "Precision"): NER entities that match fp32 went from 0.9570 to 0.9816
(F1 of int8 against fp32, 840 texts), eng.testa F1 from 0.9294 to 0.9348 (fp32 0.9332; 0.9338 since
nameless sentences are skipped, which regroups the int8 passes), at the same speed (the extra multiply is one pass over each input; bench/RESULTS.md).
"""
from __future__ import annotations

import copy
import hashlib
import warnings
from pathlib import Path
from typing import Callable

import torch
from torch import nn

RANGES_FILE = "int8_ranges.safetensors"
# 0.5 (the paper's default) left NER entities further from fp32 than plain int8 (agreement 0.90);
# 0.7 / 0.85 / 0.92 / 1.0 gave 0.970 / 0.980 / 0.982 / 0.980 on 200 PolNeAR train texts
# (one-off sweep, calibration on 2,000 eng.train sentences).
SMOOTHING_ALPHA = 0.85


class SmoothedLinear(nn.Module):
    """``linear(x / s)`` where ``linear``'s weight columns were multiplied by ``s``."""

    def __init__(self, inverse_scale: torch.Tensor, linear: nn.Module) -> None:
        super().__init__()
        self.register_buffer("inverse_scale", inverse_scale)
        self.linear = linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x * self.inverse_scale)


def input_ranges(model: nn.Module, run_calibration: Callable[[], object]) -> dict[str, torch.Tensor]:
    """Largest |input| per input channel of every Linear layer of ``model`` while ``run_calibration()`` runs it."""
    ranges: dict[str, torch.Tensor] = {}

    def record(name: str, inputs: tuple[torch.Tensor, ...]) -> None:
        x = inputs[0].detach().float()
        largest = x.reshape(-1, x.shape[-1]).abs().amax(dim=0)
        ranges[name] = torch.maximum(ranges[name], largest) if name in ranges else largest

    hooks = [module.register_forward_pre_hook(lambda _module, inputs, name=name: record(name, inputs))
             for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    try:
        run_calibration()
    finally:
        for hook in hooks:
            hook.remove()
    if not ranges:
        raise ValueError("calibration ran no Linear layer of the model (no calibration texts?)")
    return ranges


def narrows(layer: nn.Linear) -> bool:
    """A Linear layer with more inputs than outputs: in these encoders the feed-forward output
    projection (1,536 -> 384 in MiniLM, its input the GELU output) and a classifier head."""
    return layer.in_features > layer.out_features


def quantized(model: nn.Module, ranges: dict[str, torch.Tensor] | None, alpha: float = SMOOTHING_ALPHA,
              keep_fp32: Callable[[nn.Linear], bool] | None = None, in_place: bool = False) -> nn.Module:
    """A copy of ``model`` (``model`` itself with ``in_place``) whose Linear layers run in int8; those
    with ``ranges`` are smoothed first. Layers for which ``keep_fp32(layer)`` is true stay fp32,
    unsmoothed (see ``models.INT8_KEEPS_FP32``)."""
    if not in_place:
        model = copy.deepcopy(model)
    to_quantize: list[str] = []
    for parent_name, parent in list(model.named_modules()):
        for child_name, child in list(parent.named_children()):
            name = f"{parent_name}.{child_name}" if parent_name else child_name
            if not isinstance(child, nn.Linear) or (keep_fp32 is not None and keep_fp32(child)):
                continue
            if not ranges or name not in ranges:
                to_quantize.append(name)
                continue
            largest = ranges[name].to(child.weight.dtype)
            if largest.shape != (child.in_features,):
                raise ValueError(f"int8 ranges for {name} have shape {tuple(largest.shape)}, the layer takes {child.in_features} inputs")
            weight = child.weight.detach()
            scale = (largest.clamp(min=1e-5) ** alpha / weight.abs().amax(dim=0).clamp(min=1e-5) ** (1 - alpha)).clamp(min=1e-5)
            child.weight.data = weight * scale
            setattr(parent, child_name, SmoothedLinear(1.0 / scale, child))
            to_quantize.append(f"{name}.linear")
    # torch.ao.quantization is deprecated in favour of torchao, whose CPU int8 path needs
    # torch.compile; the pinned torch 2.13 still ships it, so it is used here, warnings hushed.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        # by name, so that the layers kept in fp32 are left alone
        return quantize_dynamic(model, {name: per_channel_dynamic_qconfig for name in to_quantize}, dtype=torch.qint8, inplace=True)


def int8_fraction(model: nn.Module) -> float:
    """The share of the model's Linear weights that run in int8 (1.0 for a model that
    :func:`quantized` quantized whole, 0.0 for an fp32 model): what their FLOPs are measured against."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear

    int8_weights = sum(m.in_features * m.out_features for m in model.modules() if isinstance(m, DynamicInt8Linear))
    fp32_weights = sum(m.in_features * m.out_features for m in model.modules() if isinstance(m, nn.Linear))
    total = int8_weights + fp32_weights
    return int8_weights / total if total else 0.0


def save_ranges(folder: Path, ranges: dict[str, torch.Tensor]) -> dict[str, str]:
    """Write the ranges into ``folder``; returns the artifact.json entry that names and checks them."""
    from safetensors.torch import save_file

    path = folder / RANGES_FILE
    save_file({name: r.float().contiguous() for name, r in ranges.items()}, str(path))
    return {"file": RANGES_FILE, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def load_ranges(folder: Path, entry: dict[str, str]) -> dict[str, torch.Tensor]:
    from safetensors.torch import load

    path = folder / entry["file"]
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise ValueError(f"checksum mismatch for {path} (corrupt or partial file?)")
    return load(data)


NER_CALIBRATION_SENTENCES = 2000


def calibrate_artifact(task: str, folder: str | Path, data: str | Path, quotes: str | Path | None = None) -> dict[str, str]:
    """Measure the fp32 model's input ranges on training text and store them in the artifact.

    ``data``: for ``ner`` a CoNLL folder (its eng.train, first NER_CALIBRATION_SENTENCES sentences) or
    file; for ``stance`` a CAMEO-class TSV (its train split) and ``quotes`` the project's quote TSV
    (train split; default data/quote_stance.tsv). Training text only: the dev sets stay for scoring."""
    import json

    from pipeline import models, ner, stance
    from pipeline.conll import read_conll
    from pipeline.stance_data import PROJECT_QUOTES, read_labelled_tsv

    folder = Path(folder)
    config_path = folder / models.ARTIFACT_CONFIG
    if not config_path.is_file():
        raise FileNotFoundError(f"{folder}: no {models.ARTIFACT_CONFIG} (not a model artifact)")
    loaded = models._load_artifact(task, folder)
    if task == "ner":
        conll = Path(data) / "eng.train" if Path(data).is_dir() else Path(data)
        sentences = read_conll(conll)[:NER_CALIBRATION_SENTENCES]
        docs = [ner.preprocess(loaded, *sentence.text_and_spans()) for sentence in sentences]
        ranges = input_ranges(loaded.model, lambda: ner.run_docs(loaded, docs))
        described = f"{conll.name}, first {len(sentences)} sentences"
    else:
        quotes_file = Path(quotes) if quotes else PROJECT_QUOTES
        texts = [e.text for path in (Path(data), quotes_file) for e in read_labelled_tsv(path) if e.split == "train"]
        ranges = input_ranges(loaded.model, lambda: stance.predict(loaded, texts))
        described = f"train splits of {Path(data).name} and {quotes_file.name}, {len(texts)} texts"
    config = json.loads(config_path.read_text())
    config["int8_ranges"] = {**save_ranges(folder, ranges), "calibration": described}
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    return config["int8_ranges"]
