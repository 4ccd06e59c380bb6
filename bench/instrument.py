"""Where the pipeline's wall time goes: wrap the stage functions with timers.

The FnApiRunner runs the graph in this process, so module-level wrappers installed before the
pipeline is built see every call. Only *leaf* functions are wrapped (they return their results
instead of emitting them downstream); a DoFn's ``process`` is not timed, because in a fused
stage emitting an element runs the downstream DoFns inside it. Generators are materialised
inside the timer. Whatever no timer covers (coders, bundling, GroupByKey, RunInference's
batching) is Beam overhead.
"""
from __future__ import annotations

import functools
import inspect
import threading
import time
from collections import defaultdict

SECONDS: dict[str, float] = defaultdict(float)
CALLS: dict[str, int] = defaultdict(int)
# tokens seen by each model: real (non-pad) tokens, tokens run incl. padding, and FLOPs
TOKENS: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
PRECISION: dict[str, str] = {}  # task -> the precision its model ran in
INT8_FRACTION: dict[str, float] = {}  # task -> share of its Linear weights in int8 (pipeline.int8.int8_fraction)

_INSTALLED: list[tuple[object, str, object]] = []


_DEPTH: dict[str, int] = defaultdict(int)


def _timed(key: str, fn, materialize: bool):
    """A timer that counts only the outermost call under `key` (find_quotes calls canonicalize)."""
    run = (lambda *a, **k: list(fn(*a, **k))) if materialize or inspect.isgeneratorfunction(fn) else fn

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        _DEPTH[key] += 1
        start = time.perf_counter()
        try:
            return run(*args, **kwargs)
        finally:
            _DEPTH[key] -= 1
            if _DEPTH[key] == 0:
                SECONDS[key] += time.perf_counter() - start
                CALLS[key] += 1
    return wrapper


def _patch(owner, name: str, key: str, materialize: bool = False) -> None:
    original = getattr(owner, name)
    _INSTALLED.append((owner, name, original))
    setattr(owner, name, _timed(key, original, materialize))


def block_sizes(mask) -> "torch.Tensor":
    """For a (rows, 1, width, width) mask of rows of several inputs (passes.block_attention): each
    token's input length; 1 for a padding token, which attends to itself only (an input has at least
    [CLS], a word and [SEP])."""
    return mask[:, 0].sum(dim=-1).double()


def real_tokens(mask) -> float:
    if mask.dim() == 4:
        return float((block_sizes(mask) > 1).sum())
    return float(mask.sum())


def model_flops(loaded, mask) -> tuple[float, float]:
    """(useful, executed) FLOPs of one encoder forward over a padded batch: 2 x linear weights x tokens
    plus attention (QK^T and AV: 4 x n^2 x hidden per layer, n the tokens an input attends to); useful
    counts real tokens only. ``mask``: (rows, width), or (rows, 1, width, width) for rows of several
    inputs, where each input's attention is its own block."""
    linear, layers, hidden = encoder_shape(loaded)
    rows, width = mask.shape[0], mask.shape[-1]
    if mask.dim() == 4:
        sizes = block_sizes(mask)
        real = sizes > 1
        tokens, squares = float(real.sum()), float(sizes[real].sum())  # n^2 per input: n tokens of n each
    else:
        lengths = mask.sum(dim=1).double()
        tokens, squares = float(lengths.sum()), float((lengths ** 2).sum())
    useful = 2.0 * linear * tokens + 4.0 * layers * hidden * squares
    executed = 2.0 * linear * rows * width + 4.0 * layers * hidden * width * width * rows
    return useful, executed


def encoder_shape(loaded) -> tuple[int, int, int]:
    """Weights of the encoder's linear layers (per token, a multiply-add each), layers, hidden size."""
    cached = getattr(loaded, "_bench_shape", None)
    if cached is None:
        # nn.Linear and its int8 dynamic-quantized replacement both carry in/out_features
        linear = sum(m.in_features * m.out_features for name, m in loaded.model.named_modules()
                     if hasattr(m, "in_features") and hasattr(m, "out_features") and "encoder" in name)
        config = loaded.model.config
        cached = (linear, int(config.num_hidden_layers), int(config.hidden_size))
        loaded._bench_shape = cached
    return cached


def install() -> None:
    """Wrap the stage functions. Call before the pipeline is built."""
    if _INSTALLED:
        return
    import pipeline.int8 as int8
    import pipeline.models as models
    import pipeline.ner as ner
    import pipeline.beside as beside
    import pipeline.quote_stage as quote_stage
    import pipeline.read as read
    import pipeline.rows as rows
    import pipeline.run as run
    import pipeline.stance as stance
    import pipeline.write as write

    # start-up: run() loads both models to check them; RunInference gets the same copies (one load per process)
    _patch(models, "load_model", "startup: model load")
    _patch(run, "load_model", "startup: model load")
    # read: decode, parse, language id, article id (file I/O itself is inside ParseFiles.process)
    _patch(read, "parse_file", "read+parse", materialize=True)
    _patch(read, "detect_language", "read+parse: language id")
    # NER and stance (RunInference): [stance: texts to classify,] preprocess (tokenizer; NER: words and
    # windows), forward (batching + torch), postprocess
    for module, handler, steps in ((ner, ner.NerModelHandler, {}), (stance, stance.StanceModelHandler, {"texts_to_classify": "texts"})):
        task = module.__name__.rsplit(".", 1)[-1]
        _patch(handler, "run_inference", task)
        for function, step in {**steps, "preprocess": "preprocess", "forward": "forward", "postprocess": "postprocess"}.items():
            _patch(module, function, f"{task}: {step}")
    # quotes: canonical entity names and quote/speaker finding, in this thread; or, with a process
    # beside the passes (pipeline.beside), this process's share: sending each article, waiting for
    # answers not in yet, the articles it takes back to do itself (_here), and pickling both ways (on
    # the threads that write and read the pipes: a key each, as the timers' nesting count is per key)
    _patch(quote_stage._FindQuotesFn, "_here", "quotes")
    _patch(quote_stage._FindQuotesFn, "_answer", "quotes")
    _patch(beside.BesideProcess, "submit", "quotes")
    _patch(beside, "_encode", "quotes: requests encoded")
    _patch(beside, "_decode", "quotes: answers decoded")
    # rows and Parquet
    _patch(rows, "article_rows", "rows", materialize=True)
    _patch(write, "write_parquet_atomically", "write")
    # three of Beam's fixed costs, each outside every timer above (so inside "Beam overhead"): building
    # the graph, translating it for the runner, and the waits for the state sampler's thread at the end
    # of each bundle (pipeline.run.shorten_state_sampling)
    import apache_beam.pipeline as beam_pipeline
    from apache_beam.runners.worker import statesampler

    import pipeline.graph as graph

    _patch(graph, "build", "beam: graph")
    _patch(beam_pipeline.Pipeline, "to_runner_api", "beam: translation")
    _patch(statesampler.StateSampler, "stop", "beam: state sampler")

    # the torch calls themselves, with token and FLOP counts. Passes may run side by side on several
    # threads (passes.run_passes): the model's time is the wall time while any of its passes runs
    original = models.LoadedModel.forward
    lock, running, since = threading.Lock(), defaultdict(int), {}

    @functools.wraps(original)
    def forward(self, input_ids, attention_mask, case_ids=None, position_ids=None, first_tokens=None):
        key = f"{self.task}: model"
        with lock:
            if running[key] == 0:
                since[key] = time.perf_counter()
            running[key] += 1
        try:
            return original(self, input_ids, attention_mask, case_ids, position_ids, first_tokens)
        finally:
            useful, executed = model_flops(self, attention_mask)
            with lock:
                running[key] -= 1
                if running[key] == 0:
                    SECONDS[key] += time.perf_counter() - since[key]
                CALLS[key] += 1
                PRECISION[self.task] = self.precision
                if self.task not in INT8_FRACTION:
                    INT8_FRACTION[self.task] = int8.int8_fraction(self.model)
                counts = TOKENS[self.task]
                counts["tokens"] += real_tokens(attention_mask)
                counts["padded_tokens"] += attention_mask.shape[0] * attention_mask.shape[-1]
                counts["flops"] += useful
                counts["executed_flops"] += executed

    _INSTALLED.append((models.LoadedModel, "forward", original))
    models.LoadedModel.forward = forward


def uninstall() -> None:
    while _INSTALLED:
        owner, name, original = _INSTALLED.pop()
        setattr(owner, name, original)


def reset() -> None:
    SECONDS.clear()
    CALLS.clear()
    TOKENS.clear()
    PRECISION.clear()
    INT8_FRACTION.clear()
