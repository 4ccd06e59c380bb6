"""The command line: quick commands stay quick, bad input is one line on stderr and exit status 2."""
import json
import subprocess
import sys

from conftest import ROOT


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_help_schema_and_query_do_not_import_the_models_or_beam(tmp_path):
    # torch, transformers and Beam take seconds to import; these commands need none of them
    probe = ("import json, sys\nfrom pipeline.cli import main\n"
             "for argv in (['schema', 'quotes'], ['query', '--output', sys.argv[1], 'SELECT count(*) FROM quotes']):\n"
             "    assert main(argv) == 0\n"
             "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
             "print(json.dumps(sorted(m for m in ('torch', 'transformers', 'apache_beam') if m in sys.modules)))")
    done = subprocess.run([sys.executable, "-c", probe, str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "| speaker |" in done.stdout  # the schema command's table
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def test_query_errors_are_one_line(tmp_path):
    missing = run_cli("query", "--output", str(tmp_path / "nope"), "SELECT count(*) FROM quotes")
    assert missing.returncode == 2 and "no such folder" in missing.stderr and "Traceback" not in missing.stderr
    bad_sql = run_cli("query", "--output", str(tmp_path), "SELECT nope FROM quotes")
    assert bad_sql.returncode == 2 and bad_sql.stderr.startswith("error: Binder Error")
    assert run_cli("query", "--output", str(tmp_path), "SELECT count(*) AS n FROM quotes").returncode == 0


def test_run_help_lists_the_pipeline_options_and_evaluate_the_model_options():
    assert "--ner_precision" in run_cli("run", "--help").stdout
    assert "--stance_precision" in run_cli("evaluate", "stance", "--help").stdout
    missing = run_cli("evaluate", "ner", "--conll", "/nonexistent/eng.testa")
    assert missing.returncode == 2 and "No such file" in missing.stderr and "Traceback" not in missing.stderr


def test_run_and_watch_defer_full_collections_until_the_models_are_frozen(monkeypatch, tmp_path):
    # starting them, full collections walked every object of Beam, torch and transformers: 0.9 s
    import gc

    import pipeline.run
    from pipeline import cli, models

    thresholds = gc.get_threshold()
    seen = []
    for command in ("run", "watch"):
        monkeypatch.setattr(pipeline.run, command, lambda argv: seen.append(gc.get_threshold()[2]) or {})
    try:
        for command in ("run", "watch"):
            gc.set_threshold(*thresholds)
            assert cli.main([command, "--input", str(tmp_path), "--output", str(tmp_path / "out")]) == 0
        assert seen == [cli.NO_FULL_COLLECTIONS] * 2
        models.freeze_loaded_objects()  # what check_models does once the models are loaded
        assert gc.get_threshold() == (*thresholds[:2], models.FULL_COLLECTION_EVERY)
        gc.set_threshold(*thresholds)
        assert cli.main(["schema", "quotes"]) == 0 and gc.get_threshold() == thresholds  # other commands: untouched
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def test_run_options_make_each_view_once_and_share_its_values():
    import copy

    from apache_beam.options.pipeline_options import StandardOptions, TypeOptions

    from pipeline.options import NewsPipelineOptions, RunOptions

    options = RunOptions(["--input", "in", "--output", "out", "--ner_precision", "int8"])
    news = options.view_as(NewsPipelineOptions)
    assert options.view_as(NewsPipelineOptions) is news and news.ner_precision == "int8"
    assert options.view_as(TypeOptions) is options.view_as(TypeOptions)
    options.view_as(StandardOptions).runner = "DirectRunner"  # set through one view, seen by all
    assert options.get_all_options()["runner"] == "DirectRunner"
    clone = copy.deepcopy(options)  # as beam.Pipeline copies its options
    clone.view_as(NewsPipelineOptions).output = "elsewhere"
    assert clone.view_as(NewsPipelineOptions).output == "elsewhere" and news.output == "out"
    assert clone.view_as(NewsPipelineOptions)._all_options is clone._all_options


def test_the_in_process_runner_samples_state_every_20_ms_and_a_named_runner_is_left_alone(monkeypatch):
    from apache_beam.runners.portability.fn_api_runner.fn_runner import FnApiRunner
    from apache_beam.runners.worker import statesampler
    from apache_beam.utils.counters import CounterFactory

    from pipeline import run
    from pipeline.options import RunOptions

    init = statesampler.StateSampler.__init__
    monkeypatch.setattr(init, "__defaults__", (statesampler.DEFAULT_SAMPLING_PERIOD_MS,))
    named = run.make_pipeline(RunOptions(["--runner", "DirectRunner", "--input", "in", "--output", "out"]))
    assert not isinstance(named.runner, FnApiRunner)
    assert statesampler.StateSampler("x", CounterFactory()).sampling_period_ms == 200  # Beam's own

    local = run.make_pipeline(RunOptions(["--input", "in", "--output", "out"]))
    assert isinstance(local.runner, FnApiRunner)
    # the last bundle's stop waits out at most one period: 20 ms instead of 200
    assert statesampler.StateSampler("x", CounterFactory()).sampling_period_ms == run.LOCAL_STATE_SAMPLING_MS == 20
    assert run.shorten_state_sampling()  # again: nothing to do

    monkeypatch.setattr(init, "__defaults__", (500,))  # a Beam whose default moved: left as it is
    assert not run.shorten_state_sampling() and init.__defaults__ == (500,)
