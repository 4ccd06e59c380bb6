"""Running the pipeline: options, fail-fast checks, the runner, and the final summary."""
from __future__ import annotations

import logging
import time

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from pipeline import graph, malloc, progress
from pipeline.models import freeze_loaded_objects, load_model
from pipeline.options import NewsPipelineOptions, RunOptions, check_options
from pipeline.read import check_input

LOG = logging.getLogger(__name__)


# The in-process runner ends each bundle by joining Beam's state-sampler thread, which sleeps up
# to its sampling period between samples: 200 ms, set inside Beam with no option, and 0.06 to
# 0.16 s at the end of a 100-article run (bench/RESULTS.md "The state sampler's last wait"). At
# 20 ms the thread wakes 50 times a second, outside the GIL, and the wait is at most 20 ms.
LOCAL_STATE_SAMPLING_MS = 20


def shorten_state_sampling() -> bool:
    """Give the state samplers this process makes from now on LOCAL_STATE_SAMPLING_MS; False, and
    nothing changed, where Beam's StateSampler no longer has the default this was written for."""
    from apache_beam.runners.worker import statesampler

    init = statesampler.StateSampler.__init__
    if init.__defaults__ == (statesampler.DEFAULT_SAMPLING_PERIOD_MS,):
        init.__defaults__ = (LOCAL_STATE_SAMPLING_MS,)
    return init.__defaults__ == (LOCAL_STATE_SAMPLING_MS,)


def make_pipeline(options: PipelineOptions) -> beam.Pipeline:
    """Without --runner, run in-process on the FnApiRunner: the DirectRunner would first try to
    download the Prism runner (offline machines fail, connected ones behave differently). This
    process is then the worker (but with --direct_running_mode=multi_processing, whose worker
    processes keep Beam's default), so its state samplers get a shorter period."""
    if options.view_as(StandardOptions).runner is None:
        from apache_beam.runners.portability.fn_api_runner.fn_runner import FnApiRunner

        shorten_state_sampling()
        return beam.Pipeline(runner=FnApiRunner(), options=options)
    return beam.Pipeline(options=options)


def check_models(options: NewsPipelineOptions) -> None:
    """Load both models once before the graph runs, so a bad --ner_model/--stance_model fails at
    start-up with a clear message instead of inside a worker.

    Then the loaded objects are frozen (models.freeze_loaded_objects), as the model handlers do
    once they have them: without it, the next full collection walked them all while Beam built
    the graph, 0.25 s of a 100-article run (bench/RESULTS.md "Start-up")."""
    from pipeline.stance import label_columns

    ner = load_model("ner", options.ner_model, options.ner_precision)
    stance = load_model("stance", options.stance_model, options.stance_precision)
    label_columns(stance)
    freeze_loaded_objects()
    LOG.info("models: NER in %s, stance in %s; malloc: %s", ner.precision, stance.precision, malloc.describe())


def summary(result) -> dict[str, int]:
    """The run's counts from Beam metrics (empty for a runner that reports none, e.g. a dry run)."""
    try:
        result.metrics()
    except NotImplementedError:
        return {}

    def counter(namespace: str, name: str) -> int:
        from apache_beam.metrics.metric import MetricsFilter

        found = result.metrics().query(MetricsFilter().with_namespace(namespace).with_name(name))["counters"]
        return int(sum(c.committed if c.committed is not None else c.attempted for c in found))

    return {
        "records": counter("pipeline", "records"),
        "articles": counter("rows", "articles"),
        "errors": counter("rows", "errors"),
        "duplicates": counter("pipeline", "duplicates"),
        "quotes": counter("rows", "quotes"),
        "entities": counter("rows", "entities"),
        "files": counter("pipeline", "parquet_files"),
    }


def _summary_line(counts: dict[str, int]) -> str:
    return " ".join(f"{k}={v}" for k, v in counts.items())


def run(argv: list[str]) -> dict[str, int]:
    options = RunOptions(argv)
    news = options.view_as(NewsPipelineOptions)
    check_options(news)
    check_input(news.input)
    check_models(news)
    started = time.perf_counter()
    progress.new_run()
    with make_pipeline(options) as p:
        graph.build(p, news)
    counts = summary(p.result)
    seconds = time.perf_counter() - started
    rate = f", {counts['articles'] / seconds:.2f} articles/s" if counts.get("articles") else ""
    LOG.info("done in %.1f s%s: %s", seconds, rate, _summary_line(counts))
    return counts


def watch(argv: list[str]) -> dict[str, int]:
    """Process every file that lands in --input until SIGINT/SIGTERM, then drain and return the counts.

    The signal handler only creates a stop file: the inbox poll sees it, reports its last files
    and completes, so everything picked up before the signal is written (a KeyboardInterrupt
    raised inside inference would skip the writer's finish_bundle)."""
    import signal
    import tempfile
    from pathlib import Path

    from apache_beam.io.filesystems import FileSystems

    options = RunOptions(argv)
    news = options.view_as(NewsPipelineOptions)
    check_options(news)
    if options.view_as(StandardOptions).runner is not None:
        # a cloud runner: submit the streaming job and return; Dataflow drains it on `gcloud dataflow jobs drain`
        options.view_as(StandardOptions).streaming = True
        p = beam.Pipeline(options=options)
        graph.build(p, news, streaming=True)
        result = p.run()
        LOG.info("submitted streaming job: %s", getattr(result, "job_id", lambda: result)())
        return {}
    if FileSystems.get_scheme(news.input) in (None, "file") and not Path(news.input).is_dir():
        raise FileNotFoundError(f"--input {news.input!r} is not a folder to watch (local runs watch a folder; "
                                "pass --runner=DataflowRunner --streaming for gs:// or pubsub:// inputs)")
    check_models(news)
    stop_file = Path(tempfile.mkdtemp(prefix="news-watch-")) / "stop"

    def request_stop(signum, _frame) -> None:
        LOG.info("%s received: draining (everything picked up so far will be written)", signal.Signals(signum).name)
        stop_file.touch()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    LOG.info("watching %s every %.1f s; rows go to %s (windows of %d s); Ctrl-C drains and stops",
             news.input, news.poll_interval, news.output, news.window_secs)
    progress.new_run()
    try:
        with make_pipeline(options) as p:
            graph.build(p, news, streaming=True, stop_file=str(stop_file))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    counts = summary(p.result)
    LOG.info("stopped: %s", _summary_line(counts))
    return counts
