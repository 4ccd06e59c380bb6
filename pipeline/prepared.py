"""Prepared models: an artifact's weights as they run (int8 or bf16, after the conversion that
``models.quantize_int8`` / ``models.to_bf16`` does at load), kept on disk so that the next process
that loads the same artifact in the same precision skips that work.

Loading an artifact decodes its compact weights (zstd, 6-bit deltas), then smooths and quantizes
every Linear layer (int8) or casts it (bf16). Loading both default models that way took 0.31 to
0.36 s; from prepared files, 0.13 to 0.16 s, with the same outputs bit for bit (``python -m
bench.load`` on a 2-core AMD EPYC; bench/RESULTS.md "Prepared models, and the options' views"). At
N=100 the benchmark's whole run is about 8 s, so that is about 2 % of it; for `watch` and for every
short `run`, it is start-up time.

What a file holds: every tensor of the converted model, in safetensors (no pickle: a cache file
can run no code). An int8 layer is stored as its int8 weight, per-channel scales and zero points
and its bias (``<layer>.weight_int8``, ``.weight_scales``, ``.weight_zero_points``, ``.bias``), and
rebuilt with torch's own dynamic int8 Linear; a smoothed layer (``pipeline.int8.SmoothedLinear``)
by its ``inverse_scale``; bf16 weights packed for oneDNN (``pipeline.onednn``) as plain weights,
packed again at load. Tensors, not the packed forms: those depend on the CPU.

Where: :func:`folder`: the user's cache folder (``$XDG_CACHE_HOME`` or ``~/.cache``, then
``news-pipeline/prepared``), on disk rather than in the temporary folder, which is memory on many
systems; ``$NEWS_PIPELINE_MODEL_CACHE/prepared`` where that is set (where ``gs://`` model folders
are copied too); ``NEWS_PIPELINE_PREPARED_MODELS=0`` turns it off. A file's name is a digest of
everything its tensors depend on (:func:`prepared_path`): the artifact.json (which holds its
weights' and int8 ranges' checksums), the installed base encoder's checksum, the precision, torch's
version and the source of the modules that convert and rebuild it, so that a new artifact, a torch
upgrade or an edit to that code makes a new file instead of reading a stale one. Files are written
under a temporary name and renamed, so a concurrent reader never sees half of one; a file that
cannot be read is removed and the model loaded the usual way, and one another user owns is not read
(a cache folder set to a shared place). The KEEP_FILES most recently used are kept.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import os
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

LOG = logging.getLogger(__name__)

PREPARED_ENV = "NEWS_PIPELINE_PREPARED_MODELS"  # "0": load every model the usual way
PRECISIONS = ("int8", "bf16")  # fp32 loading is decoding alone: nothing to skip
FORMAT = 1  # bump when what a file holds changes shape
KEEP_FILES = 6  # the most recently used files kept: `auto`'s pair (about 105 MB) and others the evaluate commands ask for
INT8_SUFFIXES = (".weight_int8", ".weight_scales", ".weight_zero_points")
SMOOTHING_SUFFIX = ".inverse_scale"
CASE_EMBEDDINGS = "case_embeddings.weight"


def enabled() -> bool:
    return os.environ.get(PREPARED_ENV) != "0"


def folder() -> Path:
    """Where prepared files live (see the module docstring)."""
    root = os.environ.get("NEWS_PIPELINE_MODEL_CACHE")
    if root:
        return Path(root) / "prepared"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "news-pipeline" / "prepared"


@functools.cache
def _code_digest() -> str:
    """The source of the modules whose code decides a prepared model's tensors."""
    from pipeline import int8, models, onednn, weights

    digest = hashlib.sha256()
    for module in (int8, models, onednn, weights):
        digest.update(Path(module.__file__).read_bytes())
    digest.update(Path(__file__).read_bytes())
    return digest.hexdigest()


def prepared_path(directory: Path, task: str, precision: str, artifact_config: str, base_sha256: str) -> Path:
    """The file in ``directory`` that holds (or will hold) the artifact whose artifact.json reads
    ``artifact_config``, prepared for ``precision``."""
    digest = hashlib.sha256()
    for part in (str(FORMAT), task, precision, artifact_config, base_sha256, torch.__version__, _code_digest()):
        digest.update(part.encode())
        digest.update(b"\0")
    return directory / f"{task}-{precision}-{digest.hexdigest()[:24]}.safetensors"


def state_of(model: nn.Module, case_embeddings: nn.Embedding | None) -> dict[str, torch.Tensor]:
    """Every tensor of a converted model (see the module docstring for how int8 and packed layers are kept)."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear

    from pipeline.onednn import PackedLinear

    state: dict[str, torch.Tensor] = {}
    opaque: list[str] = []
    for name, module in model.named_modules():
        if isinstance(module, DynamicInt8Linear):
            weight, bias = module._weight_bias()
            state[f"{name}.weight_int8"] = weight.int_repr()
            state[f"{name}.weight_scales"] = weight.q_per_channel_scales()
            state[f"{name}.weight_zero_points"] = weight.q_per_channel_zero_points()
        elif isinstance(module, PackedLinear):
            weight, bias = module.packed_weight.to_dense(), module.bias
            state[f"{name}.weight"] = weight
        else:
            continue
        opaque.append(f"{name}.")
        if bias is not None:
            state[f"{name}.bias"] = bias.detach()
    for key, value in model.state_dict().items():
        if not any(key.startswith(prefix) for prefix in opaque):
            state[key] = value.detach()
    if case_embeddings is not None:
        state[CASE_EMBEDDINGS] = case_embeddings.weight.detach()
    return {key: value.contiguous() for key, value in state.items()}


def _submodule_slot(model: nn.Module, name: str) -> tuple[nn.Module, str, nn.Module]:
    parent_name, _, child_name = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    return parent, child_name, getattr(parent, child_name)


def restore(model: nn.Module, case_embeddings: nn.Embedding | None, state: dict[str, torch.Tensor]) -> None:
    """Fill ``model`` (the artifact's architecture, uninitialised: ``models.empty_default_architecture``)
    and ``case_embeddings`` from :func:`state_of`'s tensors, in place, its int8 and smoothed layers
    rebuilt. Raises ValueError where the tensors and the architecture do not match, so that a caller
    never runs a model with a weight left unfilled."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear

    from pipeline.int8 import SmoothedLinear

    state = dict(state)
    if (case_embeddings is None) != (CASE_EMBEDDINGS not in state):
        raise ValueError("the prepared tensors and the artifact disagree on the casing embedding")
    if case_embeddings is not None:
        case_embeddings.load_state_dict({"weight": state.pop(CASE_EMBEDDINGS)}, assign=True)
    int8_layers = [key[: -len(INT8_SUFFIXES[0])] for key in state if key.endswith(INT8_SUFFIXES[0])]
    int8_tensors = {}
    for name in int8_layers:
        missing = [name + suffix for suffix in INT8_SUFFIXES if name + suffix not in state]
        if missing:
            raise ValueError(f"prepared int8 layer {name} lacks {missing}")
        int8_tensors[name] = [state.pop(name + suffix) for suffix in INT8_SUFFIXES]
        int8_tensors[name].append(state.pop(f"{name}.bias", None))
    for key in [key for key in state if key.endswith(SMOOTHING_SUFFIX)]:
        parent, child_name, linear = _submodule_slot(model, key[: -len(SMOOTHING_SUFFIX)])
        if not isinstance(linear, nn.Linear):
            raise ValueError(f"prepared tensors smooth {key}, which is not a Linear layer of the model")
        setattr(parent, child_name, SmoothedLinear(state[key], linear))  # its buffer, loaded below with the rest
    problems = model.load_state_dict(state, strict=False, assign=True)
    int8_params = {f"{name}.{param}" for name in int8_layers for param in ("weight", "bias")}
    missing = set(problems.missing_keys) - int8_params
    if problems.unexpected_keys or missing:
        raise ValueError(f"prepared tensors do not fit the model: missing {sorted(missing)[:3]}, "
                         f"unexpected {sorted(problems.unexpected_keys)[:3]}")
    for name, (weight, scales, zero_points, bias) in int8_tensors.items():
        parent, child_name, linear = _submodule_slot(model, name)
        if not isinstance(linear, nn.Linear) or tuple(weight.shape) != (linear.out_features, linear.in_features):
            raise ValueError(f"prepared int8 weight {name} {tuple(weight.shape)} does not fit the model")
        with warnings.catch_warnings():  # torch.ao's deprecation notices, as in pipeline.int8.quantized
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", UserWarning)
            # built small, then given its weight: the layer's constructor quantizes and packs an empty
            # weight of its full size first, half of the packing time (one-off profile of the usual load)
            layer = DynamicInt8Linear(1, 1, dtype=torch.qint8)
            layer.in_features, layer.out_features = linear.in_features, linear.out_features
            quantized = torch._make_per_channel_quantized_tensor(weight, scales, zero_points, 0)
            layer.set_weight_bias(quantized, bias)
        setattr(parent, child_name, layer)


def read(path: Path) -> dict[str, torch.Tensor] | None:
    """The tensors of ``path``; None where there is no such file, or it cannot be read (then it is removed)."""
    from safetensors.torch import load_file

    try:
        owner = path.stat().st_uid
    except FileNotFoundError:
        return None
    if hasattr(os, "getuid") and owner != os.getuid():
        # a cache folder set to a shared place: take no tensors another user left there
        LOG.warning("prepared model %s belongs to another user: not read (set NEWS_PIPELINE_MODEL_CACHE to a folder of your own)", path)
        return None
    try:
        state = load_file(str(path))
    except FileNotFoundError:
        return None
    except Exception as exc:  # safetensors raises its own error type for a truncated or corrupt file
        LOG.warning("prepared model %s cannot be read (%s): loading the usual way, and writing it again", path, exc)
        discard(path)
        return None
    try:
        os.utime(path)  # recency of use, for KEEP_FILES
    except OSError:
        pass
    return state


def discard(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def write(path: Path, state: dict[str, torch.Tensor]) -> bool:
    """Write ``state`` to ``path`` (a temporary file renamed into place), then keep the KEEP_FILES
    newest files of its folder. False, with a warning, where the folder cannot be written: the run goes on."""
    from safetensors.torch import save_file

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".partial")
        os.close(handle)
        try:
            save_file(state, temporary)
            os.replace(temporary, path)
        finally:
            discard(Path(temporary))
    except OSError as exc:
        LOG.warning("prepared model not written to %s (%s); set %s=0 to stop trying", path.parent, exc, PREPARED_ENV)
        return False
    _prune(path.parent)
    return True


def _prune(folder: Path) -> None:
    def mtime(file: Path) -> float:
        try:
            return file.stat().st_mtime
        except OSError:
            return 0.0

    files = sorted(folder.glob("*.safetensors"), key=mtime, reverse=True)
    for old in files[KEEP_FILES:]:
        discard(old)
