"""The benchmark runs end to end on a tiny corpus and ends with its one-line summary."""
import re
import subprocess
import sys

import pytest

from conftest import ROOT

ARTICLE = ('Defence Secretary John Smith said on Monday that the talks in Geneva would go on. '
           '"We will not walk away from the table," Smith told reporters.\n\n'
           'Russian officials said the proposal was "a provocation".\n')


@pytest.mark.slow
def test_bench_smoke(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(3):
        (corpus / f"a{i}.txt").write_text(f"Report {i}. {ARTICLE}", encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "bench", "--corpus", str(corpus), "--articles", "5", "--no-baseline",
                           "--memory-every", "0.5", "--workdir", str(tmp_path / "work")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert re.fullmatch(r"articles_per_s=\d+\.\d+ ratio_vs_naive=n/a non_model_share=[01]\.\d+ "
                        r"model_peak_share=\d+\.\d+ peak_rss_gb=\d+\.\d+", lines[-1]), lines[-1]
    assert "records=5 articles=5 errors=0 duplicates=0" in done.stdout  # 5 distinct articles from 3 texts
    assert re.search(r"minor page faults [\d,]+ \([\d,]+ per forward call\)", done.stdout)
    assert len(list((tmp_path / "work" / "output" / "articles").rglob("*.parquet"))) >= 1
    memory = lines[lines.index("  memory over the run (GB): seconds, RSS, malloc heap in use, heap free") + 1:]
    samples = [[float(x) for x in line.split()] for line in memory if re.fullmatch(r"\s+\d+(\s+\d+\.\d+){3}", line)]
    assert len(samples) >= 3 and samples[-1][1] > 0.3  # start, at least one sample during the run, end; models loaded
