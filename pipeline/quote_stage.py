"""The quotes stage: NER results in, articles with canonical entities, quotes and speakers out.

The text logic is ``pipeline.quotes`` (no Beam); this is its Beam glue. Where the forward passes
leave cores idle (a local run whose torch uses two or more: ``pipeline.beside.wanted``), the work
runs in a process beside them at idle priority, and this DoFn only sends it articles and emits its
answers, in order, each with its own article's timestamp and window; every answer is emitted
before the bundle ends. Rather than wait for the child, the DoFn does articles it has not handed
over yet itself (at a bundle's end the two work from both ends), and one the child holds longer
than ANSWER_WAIT_S (other processes leave it no idle core). If the process cannot start or ends,
the DoFn does the rest itself: nothing is lost.
"""
from __future__ import annotations

import logging
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Iterator

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import PredictionResult
from apache_beam.utils.windowed_value import PaneInfo, WindowedValue

from pipeline.beside import BesideProcess, BesideProcessError
from pipeline.quotes import analyse
from pipeline.read import ErrorRecord
from pipeline.records import AnalysedArticle, Entity, Quote

LOG = logging.getLogger(__name__)

# Articles sent to the process beside and not yet emitted. It answers in idle time, so the DoFn
# runs ahead of it; this bounds the texts held twice (about 2 MB at 8 kB an article).
MAX_IN_FLIGHT = 256
# How long the DoFn waits for an answer the child has in hand before doing that article itself:
# an article takes it a few ms, unless other processes leave it no idle core, where it would crawl.
ANSWER_WAIT_S = 0.2

Outcome = tuple[list[Entity], list[Quote]] | str  # the article's entities and quotes, or an error message


@dataclass(slots=True)
class _Sent:
    result: PredictionResult
    timestamp: object
    window: object
    pane: PaneInfo
    answer: Future
    outcome: Outcome | None = None  # set when this process did the article itself


class _FindQuotesFn(beam.DoFn):
    def __init__(self, indirect: bool, beside: bool):
        self.indirect = indirect
        self.beside = beside
        self.quotes = Metrics.counter("pipeline", "quotes")

    def setup(self) -> None:
        self._process: BesideProcess | None = None
        self._sent: deque[_Sent] = deque()
        self._child_starved = False  # the last wait for the child timed out: do not wait on it again
        if self.beside:
            try:
                self._process = BesideProcess("pipeline.quotes:analyse")
            except OSError as exc:
                LOG.warning("quotes: no process beside the forward passes (%s); they run in the worker's thread", exc)

    def process(self, result: PredictionResult, timestamp=beam.DoFn.TimestampParam, window=beam.DoFn.WindowParam,
                pane=beam.DoFn.PaneInfoParam) -> Iterator:
        if self._process is None:
            yield from self._outputs(result, timestamp, window, pane, self._here(result))
            return
        answer = self._process.submit(result.example.text, result.inference, self.indirect)
        self._sent.append(_Sent(result, timestamp, window, pane, answer))
        yield from self._emit(keep=MAX_IN_FLIGHT)

    def finish_bundle(self) -> Iterator:
        yield from self._emit(keep=0)

    def teardown(self) -> None:
        self._stop_process()

    def _stop_process(self) -> None:
        if self._process is not None:
            self._process.close()
            self._process = None

    def _emit(self, keep: int) -> Iterator:
        """Emit the answers that are in, oldest first, while more than ``keep`` are out. Rather than
        wait for the oldest, do the newest not yet handed to the child here: at a bundle's end the
        two work from both ends, and a child without an idle core holds nothing up."""
        while self._sent and (len(self._sent) > keep or self._sent[0].answer.done()):
            if not self._sent[0].answer.done() and self._take_one_back():
                continue
            sent = self._sent.popleft()
            yield from self._outputs(sent.result, sent.timestamp, sent.window, sent.pane, self._answer(sent))

    def _take_one_back(self) -> bool:
        """Do the newest article the child has not been handed yet here; False if there is none."""
        for sent in reversed(self._sent):
            if sent.outcome is None and sent.answer.cancel():
                sent.outcome = self._here(sent.result)
                return True
        return False

    def _answer(self, sent: _Sent) -> Outcome:
        """The outcome for one article: done here, or the child's answer, waited for if need be."""
        if sent.outcome is not None:
            return sent.outcome
        try:
            answer = sent.answer.result(timeout=0 if self._child_starved else ANSWER_WAIT_S)
            self._child_starved = False
            return answer
        except TimeoutError:
            self._child_starved = True  # the child gets no core: this article, and the next ones it holds, here
            return self._here(sent.result)
        except BesideProcessError:
            self._stop_process()  # it ended: this article and the ones after it are done here
            return self._here(sent.result)
        except RuntimeError as exc:  # analyse raised in the process beside
            return str(exc)

    def _here(self, result: PredictionResult) -> Outcome:
        try:
            return analyse(result.example.text, result.inference, self.indirect)
        except Exception as exc:  # the text functions should never raise; if they do, the article is not lost
            return f"{type(exc).__name__}: {exc}"

    def _outputs(self, result: PredictionResult, timestamp, window, pane: PaneInfo, outcome: Outcome) -> Iterator:
        article = result.example
        if isinstance(outcome, str):
            error = ErrorRecord(article.source_uri, "quotes", "exception", outcome, article.article_id)
            yield beam.pvalue.TaggedOutput("errors", WindowedValue(error, timestamp, (window,), pane))
            return
        entities, quotes = outcome
        self.quotes.inc(len(quotes))
        analysed = AnalysedArticle(article, entities, quotes, ner_model=result.model_id or "")
        yield WindowedValue(analysed, timestamp, (window,), pane)


class FindQuotes(beam.PTransform):
    """NER results -> AnalysedArticle (canonical entities, quotes and speakers); outputs ``analysed`` and ``errors``.

    ``indirect``: reported speech ("Singh said the troops would be targets") becomes quote rows
    with kind = indirect, beside the direct quotes. ``beside``: the work runs in a process at idle
    priority beside the forward passes (``pipeline.beside``).
    """

    def __init__(self, indirect: bool = True, beside: bool = False):
        super().__init__()
        self.indirect = indirect
        self.beside = beside

    def expand(self, ner_results):
        outputs = ner_results | "FindQuotes" >> beam.ParDo(_FindQuotesFn(self.indirect, self.beside)).with_outputs(
            "errors", main="analysed")
        return {"analysed": outputs.analysed, "errors": outputs.errors}
