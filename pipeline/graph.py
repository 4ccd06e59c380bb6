"""The Beam graph, top to bottom: read -> drop duplicates -> NER -> quotes -> stance -> rows -> write."""
from __future__ import annotations

import apache_beam as beam
from apache_beam.ml.inference.base import RunInference

from pipeline.ner import NerModelHandler
from pipeline.options import NewsPipelineOptions
from pipeline.quotes import FindQuotes
from pipeline.read import DropDuplicateArticles, ReadArticles, failed_batch_errors
from pipeline.rows import ErrorRows, ToRows
from pipeline.stance import StanceModelHandler
from pipeline.write import WriteTables


def build(p: beam.Pipeline, options: NewsPipelineOptions) -> None:
    read = p | "ReadArticles" >> ReadArticles(options.input, options.max_article_chars)
    articles = read["articles"] | "DropDuplicates" >> DropDuplicateArticles()

    ner_handler = NerModelHandler(options.ner_model, max_batch_size=options.inference_batch_size, large_model=options.large_model)
    with_entities, ner_failed = articles | "NER" >> RunInference(ner_handler).with_exception_handling()
    analysed = with_entities | "FindQuotes" >> FindQuotes()

    stance_handler = StanceModelHandler(options.stance_model, max_batch_size=options.inference_batch_size,
                                        large_model=options.large_model)
    with_stances, stance_failed = analysed["analysed"] | "Stance" >> RunInference(stance_handler).with_exception_handling()

    article_rows = with_stances | "Unwrap" >> beam.Map(lambda result: result.inference) | "ToRows" >> ToRows()
    errors = (
        (read["errors"],
         analysed["errors"],
         ner_failed.failed_inferences | "NerFailures" >> beam.FlatMap(failed_batch_errors, "ner"),
         stance_failed.failed_inferences | "StanceFailures" >> beam.FlatMap(failed_batch_errors, "stance"))
        | "AllErrors" >> beam.Flatten()
        | "ErrorRows" >> ErrorRows()
    )
    (article_rows, errors) | "AllRows" >> beam.Flatten() | "WriteTables" >> WriteTables(options.output)
