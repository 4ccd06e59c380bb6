"""The quotes stage in a process beside the forward passes (pipeline.beside, pipeline.quote_stage):
the same outputs as in the worker's own thread, errors kept, nothing lost when the process ends."""
from __future__ import annotations

import os
import signal
import time

import apache_beam as beam
import pytest
from apache_beam.ml.inference.base import PredictionResult
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import GlobalWindow, TimestampedValue
from apache_beam.utils.windowed_value import PaneInfo, PaneInfoTiming, WindowedValue

from pipeline import beside
from pipeline.beside import BesideProcess, BesideProcessError
from pipeline.quote_stage import FindQuotes, _FindQuotesFn
from pipeline.quotes import analyse
from pipeline.read import article_id_of
from pipeline.records import AnalysedArticle, Article, Entity

PUTIN = '"We will respond," Putin said on Tuesday. He added that "the West is to blame."'
TALKS = 'The minister said the talks would resume next week. "We are ready," she told reporters.'


def article(text: str) -> Article:
    return Article(article_id_of(text), f"mem://{article_id_of(text)[:8]}.txt", text)


def ner_results(seed_text: str) -> list[PredictionResult]:
    putin = Entity(PUTIN.index("Putin"), PUTIN.index("Putin") + 5, "Putin", "PER", 0.99)
    return [PredictionResult(article(PUTIN), [putin], "ner"), PredictionResult(article(TALKS), [], "ner"),
            PredictionResult(article(seed_text), [], "ner")]


def expected(results: list[PredictionResult]) -> list[AnalysedArticle]:
    out = []
    for result in results:
        entities, quotes = analyse(result.example.text, result.inference, True)
        out.append(AnalysedArticle(result.example, entities, quotes, ner_model="ner"))
    return out


@pytest.fixture
def process():
    started = BesideProcess("pipeline.quotes:analyse")
    yield started
    started.close()


def test_the_process_beside_answers_in_order_as_analyse_does_here(process, seed_text):
    texts = [PUTIN, TALKS, seed_text, ""]
    answers = [process.submit(text, [], True) for text in texts]
    assert [answer.result(timeout=60) for answer in answers] == [analyse(text, [], True) for text in texts]
    seed_quotes = answers[2].result()[1]
    assert len(seed_quotes) >= 13 and any(q.speaker and "Medvedev" in q.speaker for q in seed_quotes)
    assert beside.Stats.priority in ("SCHED_IDLE", "nice 19")
    assert 0 < beside.Stats.peak_rss_bytes < 500e6  # the text logic alone: no torch, no Beam


def test_an_error_in_the_process_comes_back_and_it_goes_on(process):
    failed = process.submit(PUTIN, None, True)  # no entity list: canonicalize cannot iterate it
    with pytest.raises(RuntimeError, match="^TypeError: "):
        failed.result(timeout=60)
    assert process.submit(TALKS, [], True).result(timeout=60) == analyse(TALKS, [], True)


def test_a_process_that_ended_fails_what_waits_and_what_comes_after(process):
    process._process.kill()
    process._process.wait()
    with pytest.raises(BesideProcessError):
        process.submit(TALKS, [], True).result(timeout=60)
    with pytest.raises(BesideProcessError):
        process.submit(PUTIN, [], True).result(timeout=60)


def test_ctrl_c_is_the_parents_to_handle(process):
    assert process.submit(TALKS, [], True).result(timeout=60) == analyse(TALKS, [], True)  # started
    process._process.send_signal(signal.SIGINT)
    assert process.submit(PUTIN, [], True).result(timeout=60) == analyse(PUTIN, [], True)


def test_a_closed_process_refuses_calls_at_once():
    process = BesideProcess("pipeline.quotes:analyse")
    process.close()
    with pytest.raises(BesideProcessError, match="closed"):
        process.submit(TALKS, [], True).result(timeout=1)
    process.close()  # twice: nothing to do


def test_a_request_not_yet_handed_to_the_child_can_be_taken_back():
    process = BesideProcess("pipeline.quotes:analyse", in_child=1)
    try:
        os.kill(process._process.pid, signal.SIGSTOP)  # the child holds the first request, no more
        answers = [process.submit(text, [], True) for text in (PUTIN, TALKS, PUTIN)]
        deadline = time.monotonic() + 30
        while not answers[0].running() and time.monotonic() < deadline:
            time.sleep(0.01)  # the writer thread hands the first over
        assert answers[2].cancel() and not answers[0].cancel()
        os.kill(process._process.pid, signal.SIGCONT)
        assert [answers[0].result(timeout=60), answers[1].result(timeout=60)] == [analyse(PUTIN, [], True), analyse(TALKS, [], True)]
        assert answers[2].cancelled()
    finally:
        os.kill(process._process.pid, signal.SIGCONT)
        process.close()


def test_a_target_must_name_module_and_function():
    with pytest.raises(ValueError, match="module:function"):
        BesideProcess("pipeline.quotes")


def test_wanted_on_local_runs_with_cores_to_spare_unless_the_environment_says(monkeypatch):
    monkeypatch.delenv(beside.ENV, raising=False)
    assert beside.wanted(local=True, torch_threads=2)
    assert not beside.wanted(local=True, torch_threads=1)  # one core a process: none left idle
    assert not beside.wanted(local=False, torch_threads=4)  # a cloud worker has a process per core
    monkeypatch.setenv(beside.ENV, "0")
    assert not beside.wanted(local=True, torch_threads=8)
    monkeypatch.setenv(beside.ENV, "1")
    assert beside.wanted(local=False, torch_threads=1)


@pytest.mark.parametrize("use_process", [True, False])
def test_the_stage_gives_the_same_articles_with_their_timestamps_either_way(use_process, seed_text):
    results = ner_results(seed_text)
    broken = PredictionResult(article("An article whose NER answer is broken."), None, "ner")
    with BeamTestPipeline() as p:
        stamped = (p | beam.Create(list(enumerate([*results, broken])))
                   | beam.Map(lambda pair: TimestampedValue(pair[1], 1_000 + pair[0])))
        analysed = stamped | FindQuotes(indirect=True, beside=use_process)
        out = analysed["analysed"] | "Stamp" >> beam.Map(lambda a, t=beam.DoFn.TimestampParam: (a, int(t)))
        errors = analysed["errors"] | "Errors" >> beam.Map(lambda e: (e.source_uri, e.stage, e.error, e.detail.split(":")[0]))
        assert_that(out, equal_to([(a, 1_000 + i) for i, a in enumerate(expected(results))]))
        assert_that(errors, equal_to([(broken.example.source_uri, "quotes", "exception", "TypeError")]), label="errors")


def test_a_child_that_gets_no_core_holds_nothing_up(seed_text):
    results = ner_results(seed_text) * 10
    fn = _FindQuotesFn(indirect=True, beside=True)
    fn.setup()
    pane = PaneInfo(True, True, PaneInfoTiming.ON_TIME, 0, 0)
    try:
        assert fn._process.submit(TALKS, [], True).result(timeout=60)  # started
        os.kill(fn._process._process.pid, signal.SIGSTOP)  # as if other processes took every core
        started = time.perf_counter()
        out = [value for result in results for value in fn.process(result, 5, GlobalWindow(), pane)]
        out += fn.finish_bundle()
        waited = time.perf_counter() - started
    finally:
        os.kill(fn._process._process.pid, signal.SIGCONT)
        fn.teardown()
    assert [value.value for value in out] == expected(results)
    assert waited < 10  # one ANSWER_WAIT_S, then the articles the child holds are done here too


def test_the_dofn_does_the_work_itself_when_its_process_ends(seed_text):
    results = ner_results(seed_text)
    fn = _FindQuotesFn(indirect=True, beside=True)
    fn.setup()
    try:
        assert fn._process is not None
        pane = PaneInfo(True, True, PaneInfoTiming.ON_TIME, 0, 0)
        out = list(fn.process(results[0], 5, GlobalWindow(), pane))
        fn._process._process.kill()  # the process beside dies with an article sent and one to come
        for result in results[1:]:
            out += fn.process(result, 5, GlobalWindow(), pane)
        out += fn.finish_bundle()
    finally:
        fn.teardown()
    assert all(isinstance(value, WindowedValue) and value.timestamp == 5 for value in out)
    assert [value.value for value in out] == expected(results)
    assert fn._process is None
