"""The pipeline's own options, parsed together with every standard Beam option."""
from __future__ import annotations

import os

from apache_beam.options.pipeline_options import DebugOptions, DirectOptions, PipelineOptions, StandardOptions

from pipeline import ner, stance
from pipeline.models import PRECISIONS
from pipeline.read import DEFAULT_MAX_ARTICLE_CHARS


class RunOptions(PipelineOptions):
    """The options of one run, as `run` and `watch` parse them: PipelineOptions whose views
    (``view_as``) are made once per options class.

    While it builds the graph, Beam 2.77 asks the pipeline's options for a TypeOptions view at every
    type check (``typehints.is_consistent_with``: about 150 for this graph), and each view builds an
    argparse parser for its class and parses the flags again: half of the 0.17 s the graph took to
    build (bench/RESULTS.md "Prepared models, and the options' views"). A view keeps its values in the
    dict it shares with the options, so one view a class serves every caller."""

    def view_as(self, cls):
        views = self.__dict__.setdefault("_views", {})  # not through __setattr__, which takes option names only
        view = views.get(cls)
        if view is None or view._all_options is not self._all_options:
            view = views[cls] = super().view_as(cls)
        return view


class NewsPipelineOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        # not argparse-required: Beam parses every registered options class on any PipelineOptions(),
        # so a required flag here would break unrelated pipelines in the same process; run/watch check them
        parser.add_argument("--input", default=None,
                            help="file, folder or glob of .txt / .jsonl / .html articles (local or any Beam filesystem)")
        parser.add_argument("--output", default=None, help="output folder: <output>/<table>/dt=YYYY-MM-DD/*.parquet")
        parser.add_argument("--ner_model", default=None,
                            help="Hugging Face model id or local folder for NER (default: the project's MiniLM artifact)")
        parser.add_argument("--stance_model", default=None,
                            help="Hugging Face model id or local folder for escalation stance (default: the project's)")
        parser.add_argument("--ner_precision", choices=PRECISIONS, default="auto",
                            help="auto (default): bf16 on CPUs with AMX, else int8 (NER forward 1.4x faster than fp32 on "
                                 "AVX2 and 1.23x bf16 on AVX512-BF16 without AMX, +0.0006 F1 on CoNLL dev with SmoothQuant "
                                 "scales); or fp32, int8, bf16")
        parser.add_argument("--stance_precision", choices=PRECISIONS, default="auto",
                            help="auto (default): bf16 on CPUs with bf16 kernels, else int8 with the feed-forward output "
                                 "layers in fp32 (the dev sets' macro F1 as in fp32); or fp32, int8, bf16")
        parser.add_argument("--max_article_chars", type=int, default=DEFAULT_MAX_ARTICLE_CHARS,
                            help="longer articles become an errors row instead of being processed")
        parser.add_argument("--inference_batch_size", type=int, default=ner.DEFAULT_ARTICLES_PER_BATCH,
                            help="articles per NER batch: their sentence windows are length-sorted together, so more "
                                 "articles mean less padding (default %(default)s)")
        parser.add_argument("--stance_batch_size", type=int, default=stance.DEFAULT_ARTICLES_PER_BATCH,
                            help="articles per stance batch: their quotes are length-sorted together, so more articles "
                                 "mean less padding (default %(default)s)")
        parser.add_argument("--direct_quotes_only", action="store_true",
                            help="write only quotes inside quotation marks (default: reported speech too, kind=indirect)")
        parser.add_argument("--poll_interval", type=float, default=2.0, help="watch: seconds between looks at the inbox")
        parser.add_argument("--settle_secs", type=float, default=1.0,
                            help="watch: a file is picked up once unchanged this long (or at once when renamed in)")
        parser.add_argument("--window_secs", type=int, default=60,
                            help="watch: ingest-time window; each closed window is compacted to one file per table")
        parser.add_argument("--large_model", action="store_true",
                            help="share one model copy across the worker's processes (RunInference large_model)")
        parser.add_argument("--torch_threads", type=int, default=0,
                            help="torch threads in each worker process; 0 (default): the process's share of the "
                                 "machine: 1 on Dataflow (an SDK process per vCPU), cores / --direct_num_workers in the local "
                                 "multi_processing mode, torch's own choice where one process has the machine")


LOCAL_RUNNERS = ("", "directrunner", "direct", "fnapirunner", "prismrunner", "prism")


def _runner_name(options: PipelineOptions) -> str:
    return (options.view_as(StandardOptions).runner or "").lower()


def runs_locally(options: PipelineOptions) -> bool:
    """The in-process runner (no --runner) or the DirectRunner: workers on this machine, whose
    logs the user reads (progress lines go there; a cloud runner has its own counters)."""
    return _runner_name(options) in LOCAL_RUNNERS


# Dataflow runs one SDK process per vCPU unless this experiment asks for one per VM.
ONE_SDK_PROCESS_PER_VM = "no_use_multiple_sdk_containers"


def torch_threads(options: PipelineOptions) -> int | None:
    """Threads each worker process should give torch; None leaves torch's default (all cores).

    torch's default in every process is every core. Where several processes share the cores, their
    thread pools oversubscribe them: two processes of 2 threads on 2 cores ran the int8 NER forward
    at 417 tokens/s each, against 5,400 each with 1 thread (python -m bench.forward, two at once;
    bench/RESULTS.md "Threads"). With --large_model the models run in one process per VM, which
    keeps torch's default."""
    explicit = options.view_as(NewsPipelineOptions).torch_threads
    if explicit > 0:
        return explicit
    if options.view_as(NewsPipelineOptions).large_model:
        return None
    runner = _runner_name(options)
    if "dataflow" in runner:
        experiments = options.view_as(DebugOptions).experiments or []
        return None if ONE_SDK_PROCESS_PER_VM in experiments else 1
    direct = options.view_as(DirectOptions)
    if runs_locally(options) and direct.direct_running_mode == "multi_processing":
        workers = direct.direct_num_workers or os.cpu_count() or 1  # 0: one worker per core
        if workers > 1:
            return max(1, (os.cpu_count() or 1) // workers)
    return None


def check_options(options: NewsPipelineOptions) -> None:
    """What argparse cannot say: the paths run and watch need, and batch sizes of at least one."""
    missing = [flag for flag, value in (("--input", options.input), ("--output", options.output)) if not value]
    if missing:
        raise ValueError(f"missing {' and '.join(missing)} (python -m pipeline run --help)")
    for flag, value in (("--inference_batch_size", options.inference_batch_size),
                        ("--stance_batch_size", options.stance_batch_size)):
        if value < 1:
            raise ValueError(f"{flag} must be at least 1, got {value}")
    if options.torch_threads < 0:
        raise ValueError(f"--torch_threads must be 0 (auto) or more, got {options.torch_threads}")
