"""Forward passes, shared by the NER and stance models: how a batch's inputs become rows, how rows
become passes, and how passes run.

- rows: an input (an NER window, a stance text) a row, or several short ones a row where the model
  allows it (:func:`packs_inputs`; each attends to itself only, :func:`block_attention`);
- passes: rows sorted by length and cut into passes of the precision's size (:func:`pass_batches`),
  padded to widths and row counts that keep oneDNN's kernel cache small (:data:`PAD_WIDTH_TO`,
  :data:`PAD_ROWS_TO`), and capped in tokens (:data:`MAX_PASS_TOKENS`), which bounds peak memory;
- running: one pass after another on torch's threads, or side by side, one thread each
  (:func:`run_passes`), under ``torch.inference_mode``.

Each constant's comment gives the measurement behind it (bench/RESULTS.md).
"""
from __future__ import annotations

import bisect
import itertools
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import torch

if TYPE_CHECKING:
    from pipeline.models import LoadedModel


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
