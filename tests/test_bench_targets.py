"""python -m bench.targets: the benchmark's and evaluate commands' figures read back, and each target judged."""
import re
import subprocess
import sys

import pytest

from conftest import ROOT

from bench.targets import BenchRun, F1Pair, main, parse_bench, parse_score, report, rss_growth_gb, verdicts

FIXTURES = ROOT / "tests" / "fixtures"


def run(articles, ratio, non_model, peak_share, rss, ms, samples=()):
    return BenchRun(articles, 1000 / ms, ratio, non_model, peak_share, rss, ms, list(samples))


def test_a_real_benchmark_output_is_read_back():
    # the whole output of `python -m bench --articles 1000 --no-baseline` on a 2-core AMD EPYC (95e6a90)
    got = parse_bench(1000, (FIXTURES / "bench" / "output_n1000.txt").read_text())
    assert (got.articles_per_s, got.ratio, got.non_model_share, got.model_peak_share, got.peak_rss_gb) == (13.037, None, 0.083, 0.622, 0.99)
    assert got.ms_per_article == 77
    assert got.rss_samples == [(0, 0.571), (60, 0.976), (77, 0.992)]
    assert got.ner_tokens_per_article == 875


def test_output_without_a_summary_line_is_an_error():
    with pytest.raises(ValueError, match="N=100: no summary line"):
        parse_bench(100, "Traceback (most recent call last):\n  ...\nMemoryError\n")


def test_scores_of_the_evaluate_commands():
    assert parse_score("model: ner\n...\nprecision=0.9301 recall=0.9355 f1=0.9328", "f1") == 0.9328
    stance = "expected calibration error (10 bins): 0.0390\naccuracy=0.9585 macro_f1=0.9529"
    assert parse_score(stance, "macro_f1") == 0.9529
    with pytest.raises(ValueError, match="no f1="):
        parse_score(stance, "f1")  # macro_f1= is not f1=


def test_every_target_met():
    runs = [run(100, 4.31, 0.135, 0.566, 0.87, 77), run(1000, 5.67, 0.083, 0.622, 0.99, 77),
            run(10_000, None, 0.079, 0.550, 1.06, 84, [(0, 0.6), (60, 1.0), (420, 1.04), (480, 1.05), (840, 1.06)])]
    got = verdicts(runs, [F1Pair("NER eng.testa", "int8", 0.9332, 0.9328)])
    assert [v.met for v in got] == [True] * 6
    assert got[0].figures == "4.31x at N=100, 5.67x at N=1,000"
    assert got[3].figures.endswith("(largest +9% on smallest, at most +15%)")  # no token counts given
    assert "RSS +0.02 GB over the second half of N=10,000" in got[4].figures
    assert report(got).splitlines()[-1] == "targets_met=6 targets=6 not_met=0 not_run=0"


def test_targets_missed_and_not_run():
    # the AMX VM's kind of miss: Python beside short forwards, a peak read in a burst; a slower large run
    runs = [run(100, 3.9, 0.35, 0.25, 0.98, 60), run(1000, 4.4, 0.19, 0.16, 1.12, 70)]
    got = verdicts(runs, [F1Pair("stance quote_stance.tsv dev", "int8", 0.8732, 0.8572)])
    assert [v.met for v in got] == [False, False, False, False, None, False]
    assert got[3].figures == "60 ms at N=100, 70 ms at N=1,000 (largest +17% on smallest, at most +15%)"
    runs[0].ner_tokens_per_article, runs[1].ner_tokens_per_article = 763, 875
    assert verdicts(runs, [])[3].figures.endswith("(largest +17% on smallest, at most +15%; NER tokens an article 763, 875)")
    assert "not run at 10,000" in got[4].figures
    assert report(got).splitlines()[-1] == "targets_met=0 targets=6 not_met=5 not_run=1"
    assert verdicts([run(100, None, 0.1, 0.6, 0.9, 80)], [])[3].met is None  # one size tells nothing of flatness


def test_rss_growth_over_a_run():
    assert rss_growth_gb([(0, 0.57), (60, 0.98), (120, 1.10), (180, 1.25)]) == pytest.approx(0.27)  # 1.25 - 0.98, the highest of the first 90 s
    assert rss_growth_gb([(0, 0.57), (77, 0.99)]) is None
    growing = run(10_000, None, 0.08, 0.55, 1.4, 84, [(0, 0.6), (300, 1.0), (450, 1.2), (900, 1.4)])
    assert verdicts([run(100, 4.3, 0.13, 0.56, 0.87, 77), growing], [])[4].met is False


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(SystemExit):
        main(["--corpus", str(tmp_path / "missing")])
    with pytest.raises(SystemExit):
        main(["--corpus", str(tmp_path), "--conll", str(tmp_path / "eng.testa")])


@pytest.mark.slow
def test_targets_end_to_end_on_a_tiny_corpus(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(3):
        (corpus / f"a{i}.txt").write_text(f'Report {i}. Minister Jane Doe said: "We will not back down."\n', encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "bench.targets", "--corpus", str(corpus), "--sizes", "3",
                           "--baseline-up-to", "0", "--out", str(tmp_path / "logs")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert re.fullmatch(r"targets_met=\d targets=6 not_met=\d not_run=[3-6]", lines[-1]), lines[-1]
    assert any(line.startswith("  everything but the forwards <= 15%") and "at N=3" in line for line in lines)
    assert (tmp_path / "logs" / "bench_3.log").read_text().rstrip().splitlines()[-1].startswith("articles_per_s=")
    assert "bench.targets: " in done.stderr and "done in" in done.stderr
