"""Running the pipeline: options, fail-fast checks, the runner, and the final summary."""
from __future__ import annotations

import logging
import time

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from pipeline import graph
from pipeline.models import load_model
from pipeline.options import NewsPipelineOptions
from pipeline.read import check_input

LOG = logging.getLogger(__name__)


def make_pipeline(options: PipelineOptions) -> beam.Pipeline:
    """Without --runner, run in-process on the FnApiRunner: the DirectRunner would first try to
    download the Prism runner (offline machines fail, connected ones behave differently)."""
    if options.view_as(StandardOptions).runner is None:
        from apache_beam.runners.portability.fn_api_runner.fn_runner import FnApiRunner

        return beam.Pipeline(runner=FnApiRunner(), options=options)
    return beam.Pipeline(options=options)


def check_models(options: NewsPipelineOptions) -> None:
    """Load both models once before the graph runs, so a bad --ner_model/--stance_model fails at
    start-up with a clear message instead of inside a worker."""
    from pipeline.stance import label_columns

    load_model("ner", options.ner_model)
    label_columns(load_model("stance", options.stance_model))


def summary(result) -> dict[str, int]:
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


def run(argv: list[str]) -> dict[str, int]:
    options = PipelineOptions(argv)
    news = options.view_as(NewsPipelineOptions)
    check_input(news.input)
    check_models(news)
    started = time.perf_counter()
    with make_pipeline(options) as p:
        graph.build(p, news)
    counts = summary(p.result)
    line = " ".join(f"{k}={v}" for k, v in counts.items())
    LOG.info("done in %.1f s: %s", time.perf_counter() - started, line)
    return counts
