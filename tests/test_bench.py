"""The benchmark runs end to end on a tiny corpus and ends with its one-line summary."""
import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT

from pipeline.passes import PACK_ROW_TOKENS

ARTICLE = ('Defence Secretary John Smith said on Monday that the talks in Geneva would go on. '
           '"We will not walk away from the table," Smith told reporters.\n\n'
           'Russian officials said the proposal was "a provocation".\n')


def reports(tmp_path, count: int):
    """A corpus folder of ``count`` articles, each a different text ("Report i." first)."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(count):
        (corpus / f"a{i}.txt").write_text(f"Report {i}. {ARTICLE}", encoding="utf-8")
    return corpus


@pytest.mark.slow
def test_bench_smoke(tmp_path):
    corpus = reports(tmp_path, 3)
    done = subprocess.run([sys.executable, "-m", "bench", "--corpus", str(corpus), "--articles", "5", "--no-baseline",
                           "--memory-every", "0.5", "--workdir", str(tmp_path / "work")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert re.fullmatch(r"articles_per_s=\d+\.\d+ ratio_vs_naive=n/a non_model_share=[01]\.\d+ "
                        r"model_peak_share=\d+\.\d+ peak_rss_gb=\d+\.\d+", lines[-1]), lines[-1]
    assert "records=5 articles=5 errors=0 duplicates=0" in done.stdout  # 5 distinct articles from 3 texts
    assert re.search(r"Python imports of both sides, before either is timed: \d+\.\d s", done.stdout)
    assert re.search(r"   malloc: (glibc, mmap threshold 4 MiB, trim threshold 32 MiB|tcmalloc \(preloaded\)|jemalloc \(preloaded\))",
                     done.stdout)
    assert re.search(r"minor page faults [\d,]+ \([\d,]+ per forward call\)", done.stdout)
    assert re.search(r"garbage collector \d+\.\d\d s, inside the stages above: \d+ full collections \(s: (none|[\d., ]+)\), "
                     r"[\d,]+ young \(\d+\.\d\d s\); [\d,]+ objects frozen", done.stdout)
    assert len(list((tmp_path / "work" / "output" / "articles").rglob("*.parquet"))) >= 1
    # Beam's fixed costs inside its overhead: the graph and its translation take time in every run
    fixed = dict(re.findall(r"^ {4}(?:of which )?(building the graph|translating it for the runner|waiting for the state sampler)"
                            r" +(\d+\.\d\d) s", done.stdout, re.M))
    assert set(fixed) == {"building the graph", "translating it for the runner", "waiting for the state sampler"}, fixed
    assert float(fixed["building the graph"]) > 0 and float(fixed["translating it for the runner"]) > 0
    memory = lines[lines.index("  memory over the run (GB): seconds, RSS, malloc heap in use, heap free") + 1:]
    # seconds, RSS, and malloc's heap in use and free: glibc's or tcmalloc's (the bench starts on it where installed)
    samples = [line.split() for line in memory if re.fullmatch(r"\s+\d+\s+\d+\.\d+(\s+(\d+\.\d+|n/a)){2}", line)]
    assert len(samples) >= 3 and float(samples[-1][1]) > 0.3  # start, at least one sample during the run, end; models loaded
    assert "jemalloc" in done.stdout or float(samples[-1][2]) > 0.1  # the models' weights are in use
    assert re.search(r"bench: \d+ s, of 5 articles [0-5] into NER and [0-5] through the pipeline, RSS \d\.\d\d GB", done.stderr)


@pytest.mark.slow
def test_forward_bench_times_each_shape_and_counts_its_page_faults():
    done = subprocess.run([sys.executable, "-m", "bench.forward", "--threads", "1", "--seconds", "0.05", "--random-weights"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if "tokens/s" in line]
    assert len(lines) in (8, 12)  # 2 models x fp32/int8 (and bf16 with bf16 kernels) x the pipeline's and the naive loop's shape
    assert all(re.search(r" \d+ page faults/pass$", line) for line in lines)
    assert re.fullmatch(r"ner_auto=\w+ ner_tokens_per_s=\d+ .* stance_vs_naive=\d+\.\d+", done.stdout.splitlines()[-1])


def test_bench_refuses_several_local_workers():
    from bench.run import check_one_worker

    check_one_worker(["--direct_num_workers=1"])  # the default, said aloud
    with pytest.raises(SystemExit, match="direct_num_workers=2: the benchmark times the stages of one local worker"):
        check_one_worker(["--direct_num_workers", "2", "--direct_running_mode=multi_threading"])


def test_bench_refuses_what_it_cannot_run(tmp_path):
    from bench.run import parse_args, prepare_input

    with pytest.raises(SystemExit, match="not a folder"):
        prepare_input(tmp_path / "missing", 5, tmp_path / "input")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="no .txt files"):
        prepare_input(tmp_path / "empty", 5, tmp_path / "input")
    for articles in ("0", "-3", "ten"):
        with pytest.raises(SystemExit):
            parse_args(["--corpus", str(tmp_path), "--articles", articles])
    args, pipeline_args = parse_args(["--corpus", str(tmp_path), "--articles", "7", "--inference_batch_size", "8"])
    assert args.articles == 7 and pipeline_args == ["--inference_batch_size", "8"]


def test_bench_cycles_the_corpus_into_distinct_articles(tmp_path):
    from bench.run import prepare_input

    files = prepare_input(reports(tmp_path, 2), 5, tmp_path / "input")
    texts = [f.read_text(encoding="utf-8") for f in files]
    assert len(set(texts)) == 5 and texts[2] == "Copy 1.\n" + texts[0]


@pytest.mark.slow
def test_nameless_bench_counts_what_skipping_saves(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text(ARTICLE + "It was over, he said. They left.\n", encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "bench.nameless", "--corpus", str(corpus)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    last = done.stdout.strip().splitlines()[-1]
    found = re.fullmatch(r"tokens_skipped=(0\.\d+) fp32_entities=(\d+) fp32_entities_changed=(\d+)", last)
    assert found, last
    assert float(found[1]) > 0.1 and int(found[2]) >= 4 and found[3] == "0"  # two of five sentences skipped
    empty = subprocess.run([sys.executable, "-m", "bench.nameless", "--corpus", str(tmp_path / "none")],
                           cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert empty.returncode == 2 and "not a folder" in empty.stderr


def test_a_mixed_int8_model_is_measured_against_the_blend_of_its_peaks():
    from bench.peak import model_peak

    peaks = {"fp32": 100.0, "int8": 300.0, "bf16": 1000.0}
    assert model_peak(peaks, "fp32") == 100.0 and model_peak(peaks, "bf16", 0.0) == 1000.0
    assert model_peak(peaks, "int8") == model_peak(peaks, "int8", 1.0) == 300.0
    # half the work at 300, half at 100: 2 units in 1/600 + 1/200 of the time
    assert model_peak(peaks, "int8", 0.5) == pytest.approx(150.0)


@pytest.mark.slow
@pytest.mark.parametrize("module", ["bench.packed", "bench.unpadded", "bench.side_by_side"])
def test_forward_comparison_bench_smoke(tmp_path, module):
    from pipeline import onednn

    if module == "bench.packed" and not onednn.can_pack():
        pytest.skip("this CPU / torch cannot pack bf16 Linear weights for oneDNN")
    corpus = reports(tmp_path, 2)
    done = subprocess.run([sys.executable, "-m", module, "--corpus", str(corpus), "--rounds", "2"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("2 articles: ") and len([l for l in lines if l.startswith("round ")]) == 2
    # bf16 sums in another order may move probabilities in their last bits; on these articles no label moves
    assert re.fullmatch(r"ner_outputs_changed=\d+ ner_labels_changed=0 stance_outputs_changed=\d+ stance_labels_changed=0 "
                        r"ner_speedup_median=\d+\.\d+ stance_speedup_median=\d+\.\d+", lines[-1]), lines[-1]


@pytest.mark.slow
def test_bundle_thread_bench_smoke(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text(ARTICLE, encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "bench.bundle_thread", "--corpus", str(corpus), "--rounds", "2"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert len([line for line in lines if line.startswith("round ")]) == 2
    last = re.fullmatch(r"bundle_thread_torch_threads=(\d+) main_torch_threads=(\d+) ner_thread_speed_median=\d+\.\d+ "
                        r"stance_thread_speed_median=\d+\.\d+", lines[-1])
    assert last, lines[-1]
    assert last[1] == last[2]  # a thread started after the passes gets the process's torch threads


@pytest.mark.slow
def test_ops_bench_smoke(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text(ARTICLE, encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "bench.ops", "--corpus", str(corpus), "--task", "stance", "--rows", "5"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    last = re.fullmatch(r"task=stance precision=(fp32|bf16|int8\+fp32|int8) ops_s=\d+\.\d\d linear_share=(0\.\d+) "
                        r"attention_share=(0\.\d+)", done.stdout.strip().splitlines()[-1])
    assert last, done.stdout[-2000:]
    assert float(last[2]) > 0.2 and float(last[3]) > 0.0  # Linear layers and attention both found in the profile


@pytest.mark.slow
def test_openvino_bench_smoke(tmp_path):
    pytest.importorskip("openvino", reason="pip install -e '.[bench]'")
    corpus = reports(tmp_path, 2)
    # OpenVINO's CPU plugin aborts with a preloaded malloc: the bench runs without one
    env = {name: value for name, value in os.environ.items() if name != "LD_PRELOAD"}
    done = subprocess.run([sys.executable, "-m", "bench.openvino", "--corpus", str(corpus), "--rounds", "2"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("ner: torch ") and lines[1].startswith("stance: torch ") and "converting and compiling took" in lines[0]
    assert lines[2].startswith("2 articles: ") and len([l for l in lines if l.startswith("round ")]) == 2
    # another runtime sums in another order; on these short articles no label moves
    assert re.fullmatch(r"ner_outputs_changed=\d+ ner_labels_changed=0 stance_outputs_changed=\d+ stance_labels_changed=0 "
                        r"ner_speedup_median=\d+\.\d+ stance_speedup_median=\d+\.\d+", lines[-1]), lines[-1]


def test_openvino_bench_refuses_a_preloaded_malloc(tmp_path):
    from pipeline.malloc import tcmalloc_library

    library = tcmalloc_library()
    if library is None:
        pytest.skip("tcmalloc is not installed")
    env = {**os.environ, "LD_PRELOAD": library}
    done = subprocess.run([sys.executable, "-m", "bench.openvino", "--corpus", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 1 and "tcmalloc is preloaded" in done.stderr and "without LD_PRELOAD" in done.stderr


def test_the_peak_is_the_best_shape_of_any_round(monkeypatch):
    from bench import peak

    speeds = iter([100.0, 300.0, 250.0, 900.0, 50.0,  # round 0: the feed-forward shape is best
                   120.0, 310.0, 1200.0, 10.0, 40.0])  # round 1: the same shape, faster
    monkeypatch.setattr(peak, "shape_gflops", lambda precision, m, k, n: next(speeds))
    found = peak.measure_peak("fp32", rounds=2)
    assert found == peak.Peak(1200.0, (peak.TOKEN_ROWS, peak.HIDDEN, peak.INTERMEDIATE))
    assert found.describe() == "1200.0 GFLOP/s (2048x384 @ 384x1536)"


@pytest.mark.slow
def test_peak_bench_prints_each_shape_round_by_round():
    done = subprocess.run([sys.executable, "-m", "bench.peak", "--precision", "fp32", "--rounds", "2"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert "2048x2048x2048" in lines[1] and "2048x384x1536" in lines[1]
    assert [line.split()[0] for line in lines[2:5]] == ["0", "1", "best"]
    last = re.fullmatch(r"precision=fp32 peak_gflops=(\d+\.\d) peak_shape=(\d+x\d+x\d+) square_2048_gflops=(\d+\.\d)", lines[-1])
    assert last and float(last[1]) >= float(last[3]) > 1.0  # the peak is at least the square's best


def test_collector_time_counts_full_and_young_collections():
    import gc

    from bench.memory import CollectorTime

    with CollectorTime() as collector:
        gc.collect()
        gc.collect(0)
    gc.collect()  # after the block: not counted
    assert len(collector.full) == 1 and collector.young_count >= 1
    assert collector.report().startswith("  garbage collector ") and "1 full collections" in collector.report()


@pytest.mark.slow
def test_pass_memory_bench_smoke(tmp_path):
    corpus = reports(tmp_path, 3)
    done = subprocess.run([sys.executable, "-m", "bench.pass_memory", "--corpus", str(corpus)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("3 articles, NER in ")
    last = re.fullmatch(r"passes=(\d+) largest_uncapped=(\d+)x(\d+) largest_capped=(\d+)x(\d+) "
                        r"rss_mb_uncapped=(-?\d+) rss_mb_capped=(-?\d+)", lines[-1])
    assert last, lines[-1]
    assert int(last[1]) >= 1
    # short articles: no pass near the cap, so both ways cut the same largest pass
    assert last.group(2, 3) == last.group(4, 5)


@pytest.mark.slow
def test_row_packing_bench_smoke(tmp_path):
    corpus = reports(tmp_path, 3)
    done = subprocess.run([sys.executable, "-m", "bench.row_packing", "--corpus", str(corpus), "--rounds", "2",
                           "--precision", "fp32"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    for line, what in ((lines[1], "windows"), (lines[2], "stance texts")):
        rows = re.fullmatch(rf"(\d+) {what} of \d+\.\d tokens on average: (\d+) rows of up to {PACK_ROW_TOKENS} tokens", line)
        assert rows and int(rows[2]) < int(rows[1]), line  # short sentences share rows
    assert len([line for line in lines if line.startswith("round ")]) == 2
    last = re.fullmatch(r"ner_outputs_changed=\d+ ner_labels_changed=(\d+) stance_outputs_changed=\d+ "
                        r"stance_labels_changed=(\d+) ner_speedup_median=\d+\.\d+ stance_speedup_median=\d+\.\d+", lines[-1])
    assert last, lines[-1]
    assert last.group(1, 2) == ("0", "0")  # fp32: the same labels either way


def test_packed_rows_count_the_same_useful_flops_and_tokens():
    from types import SimpleNamespace

    from bench.instrument import model_flops, real_tokens
    from pipeline import passes

    loaded = SimpleNamespace(_bench_shape=(1000, 2, 8))  # linear weights, layers, hidden
    lengths = [3, 5, 4]
    alone = passes.attention_mask(lengths, 5)
    packed, _ = passes.block_attention([[1, 0], [2]], lengths, width=8, fill=0)
    assert real_tokens(packed) == real_tokens(alone) == 12
    useful_alone, executed_alone = model_flops(loaded, alone)
    useful_packed, executed_packed = model_flops(loaded, packed)
    assert useful_packed == useful_alone == 2.0 * 1000 * 12 + 4.0 * 2 * 8 * (9 + 25 + 16)
    assert executed_alone == 2.0 * 1000 * 3 * 5 + 4.0 * 2 * 8 * 25 * 3
    assert executed_packed == 2.0 * 1000 * 2 * 8 + 4.0 * 2 * 8 * 64 * 2


@pytest.mark.slow
def test_row_tokens_bench_smoke(tmp_path):
    corpus = reports(tmp_path, 3)
    done = subprocess.run([sys.executable, "-m", "bench.row_tokens", "--corpus", str(corpus), "--rounds", "2",
                           "--tokens", "64", "32", "--precision", "fp32"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert re.search(r"ner fp32: \d+ inputs, \d+ tokens a pass; stance fp32: \d+ inputs", lines[0]), lines[0]
    assert len([line for line in lines if line.startswith("round ")]) == 2
    assert re.fullmatch(r"ner_64_s=\d+\.\d{3} ner_32_s=\d+\.\d{3} stance_64_s=\d+\.\d{3} stance_32_s=\d+\.\d{3}", lines[-1]), lines[-1]
    bad = subprocess.run([sys.executable, "-m", "bench.row_tokens", "--corpus", str(corpus), "--tokens", "4"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "rows of at least 8 tokens" in bad.stderr


@pytest.mark.slow
def test_load_bench_times_both_ways_and_the_prepared_way_is_used():
    done = subprocess.run([sys.executable, "-m", "bench.load", "--rounds", "2"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("first run (usual load, then the prepared files written)")
    rounds = [line for line in lines if line.startswith("round ")]
    assert len(rounds) == 2 and all("usual" in line and "prepared" in line for line in rounds)
    last = re.fullmatch(r"usual_s_median=(\d+\.\d+) prepared_s_median=(\d+\.\d+) first_run_s=\d+\.\d+ speedup=\d+\.\d+", lines[-1])
    assert last, lines[-1]
    assert float(last[2]) > 0 and float(last[1]) > 0
