"""The Beam graph, top to bottom: read (each text once) -> NER -> quotes -> stance -> rows -> write.

`run` reads a bounded set of files; `watch` reads an inbox continuously. Only the source, the
duplicate step (a GroupByKey over article ids, which would hold everything back until an unbounded
source ends) and the writer's windowing differ; the stages in between are the same transforms.
"""
from __future__ import annotations

import apache_beam as beam
from apache_beam.ml.inference.base import RunInference

from pipeline import beside
from pipeline.inbox import PUBSUB_SCHEME, ReadPubSubArticles, WatchInbox
from pipeline.ner import NerModelHandler
from pipeline.options import NewsPipelineOptions, runs_locally, torch_threads
from pipeline.quote_stage import FindQuotes
from pipeline.read import FindDuplicates, MatchInput, ReadArticles, failed_batch_errors
from pipeline.rows import ErrorRows, ToRows
from pipeline.stance import StanceModelHandler
from pipeline.write import WriteTables

NEVER = ""  # a stop file that never appears: a cloud job runs until it is drained or cancelled


def build(p: beam.Pipeline, options: NewsPipelineOptions, streaming: bool = False, stop_file: str | None = None) -> None:
    """The batch graph, or the streaming one: an inbox folder (local or gs://) watched until
    `stop_file` appears, or a Pub/Sub subscription (pubsub://projects/P/subscriptions/S)."""
    if streaming and options.input.startswith(PUBSUB_SCHEME):
        read = p | "ReadPubSub" >> ReadPubSubArticles(options.input, options.max_article_chars)
        articles = read["articles"]
    elif streaming:
        read = p | "WatchInbox" >> WatchInbox(options.input, stop_file or NEVER, options.poll_interval,
                                              options.settle_secs, options.max_article_chars)
        articles = read["articles"]  # duplicates are hidden by the views (first ingestion wins)
    else:
        files = p | "MatchInput" >> MatchInput(options.input)
        duplicates = files | "FindDuplicates" >> FindDuplicates(options.max_article_chars)  # ids only
        read = files | "ReadArticles" >> ReadArticles(duplicates, options.max_article_chars)
        articles = read["articles"]  # each text once

    threads = torch_threads(p.options)  # each worker process's share of its machine's cores
    progress = runs_locally(p.options)  # progress lines in the log (a cloud runner shows its counters)
    ner_handler = NerModelHandler(options.ner_model, max_batch_size=options.inference_batch_size, large_model=options.large_model,
                                  precision=options.ner_precision, torch_threads=threads, report_progress=progress)
    with_entities, ner_failed = articles | "NER" >> RunInference(ner_handler).with_exception_handling()
    # the quotes in a process at idle priority, on the cores the forward passes leave idle
    quotes_beside = beside.wanted(runs_locally(p.options), threads)
    analysed = with_entities | "FindQuotes" >> FindQuotes(indirect=not options.direct_quotes_only, beside=quotes_beside)

    stance_handler = StanceModelHandler(options.stance_model, max_batch_size=options.stance_batch_size,
                                        large_model=options.large_model, precision=options.stance_precision,
                                        torch_threads=threads)
    with_stances, stance_failed = analysed["analysed"] | "Stance" >> RunInference(stance_handler).with_exception_handling()

    article_rows = with_stances | "Unwrap" >> beam.Map(lambda result: result.inference) | "ToRows" >> ToRows(report_progress=progress)
    errors = {
        "ReadErrors": read["errors"],
        "QuoteErrors": analysed["errors"],
        "NerErrors": ner_failed.failed_inferences | "NerFailures" >> beam.FlatMap(failed_batch_errors, "ner"),
        "StanceErrors": stance_failed.failed_inferences | "StanceFailures" >> beam.FlatMap(failed_batch_errors, "stance"),
    }

    # One writer per branch, no Flatten: the local runner materialises a Flatten, which would hold
    # every row back until an unbounded source ends.
    def writer() -> WriteTables:
        if streaming:
            inbox = None if options.input.startswith(PUBSUB_SCHEME) else options.input
            return WriteTables(options.output, window_secs=options.window_secs, inbox=inbox, stop_file=stop_file)
        return WriteTables(options.output)

    article_rows | "WriteArticles" >> writer()
    for name, failures in errors.items():
        failures | f"{name}ToRows" >> ErrorRows() | f"Write{name}" >> writer()
