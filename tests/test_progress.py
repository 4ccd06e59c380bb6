"""Progress lines on long runs (pipeline.progress)."""
import logging
import shutil

import pytest

from conftest import SEED
from pipeline import progress
from pipeline.progress import ProgressLog


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_line_at_most_every_interval_with_both_counts_and_both_rates():
    clock, lines = Clock(), []
    log = ProgressLog(every_secs=30, clock=clock, emit=lines.append)
    for now in (10, 20, 29.9):  # nothing before the interval has passed
        clock.now = now
        log.through_ner(64)
    assert lines == []
    clock.now = 31
    log.written(256)  # the stance stage lets its batch go at once
    assert lines == ["progress: 192 articles through NER, 256 written, in 31 s "
                     "(6.19 articles/s through NER; 6.19/s over the last 31 s)"]
    clock.now = 45
    log.through_ner(64)
    assert len(lines) == 1
    clock.now = 3725  # over an hour in: hours and minutes
    log.through_ner(64)
    assert lines[1] == ("progress: 320 articles through NER, 256 written, in 1 h 02 min "
                        "(0.09 articles/s through NER; 0.03/s over the last 3694 s)")


def test_one_article():
    clock, lines = Clock(), []
    log = ProgressLog(every_secs=0, clock=clock, emit=lines.append)
    clock.now = 125
    log.through_ner()
    assert lines == ["progress: 1 article through NER, 0 written, in 2 min 05 s "
                     "(0.01 articles/s through NER; 0.01/s over the last 125 s)"]


@pytest.mark.parametrize("argv, local", [
    ((), True), (("--runner=DirectRunner",), True), (("--runner=DataflowRunner",), False), (("--runner=FlinkRunner",), False),
])
def test_progress_lines_are_for_local_runs(argv, local):
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline.options import runs_locally

    assert runs_locally(PipelineOptions(list(argv))) is local


@pytest.mark.slow
def test_each_run_counts_each_of_its_articles_once(tmp_path, monkeypatch, caplog):
    from pipeline.run import run

    monkeypatch.setattr(progress, "PROGRESS_EVERY_SECS", 0)  # a line on every count
    inbox = tmp_path / "in"
    inbox.mkdir()
    shutil.copy(SEED, inbox / SEED.name)
    (inbox / "second.txt").write_text('"We will not back down," the minister said on Monday.')
    (inbox / "empty.txt").write_text("")  # an errors row, not an article
    for attempt in ("out1", "out2"):  # the second run in the same process starts from 0 again
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="pipeline.progress"):
            counts = run(["--input", str(inbox), "--output", str(tmp_path / attempt)])
        assert counts["articles"] == 2
        lines = [r.getMessage().split(", in ")[0] for r in caplog.records if r.name == "pipeline.progress"]
        # one NER batch (both articles), then each article's rows
        assert lines == ["progress: 2 articles through NER, 0 written", "progress: 2 articles through NER, 1 written",
                         "progress: 2 articles through NER, 2 written"]
