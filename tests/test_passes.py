"""Forward passes one at a time or side by side (passes.run_passes): every pass runs once, each
side-by-side pass on one torch thread, errors reach the caller, and the answers do not change."""
import dataclasses
import threading
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from pipeline import models, ner, passes, stance


@pytest.fixture
def two_torch_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def record_passes(side_by_side: bool, pass_rows: list[list[int]]) -> list[tuple[list[int], int, int, bool]]:
    seen, lock = [], threading.Lock()

    def run_pass(rows: list[int]) -> None:
        with lock:
            seen.append((rows, threading.get_ident(), torch.get_num_threads(), torch.is_inference_mode_enabled()))

    passes.run_passes(SimpleNamespace(side_by_side=side_by_side), run_pass, pass_rows)
    return seen


def test_side_by_side_passes_run_once_each_on_one_thread(two_torch_threads):
    pass_rows = [[i, i + 100] for i in range(9)]
    seen = record_passes(True, pass_rows)
    assert sorted(rows for rows, *_ in seen) == pass_rows
    assert {threads for _, _, threads, _ in seen} == {1}  # each pool thread runs its pass on one torch thread
    assert all(inference for *_, inference in seen)
    assert threading.get_ident() not in {ident for _, ident, _, _ in seen}
    assert torch.get_num_threads() == 2  # the caller keeps its own threads


def torch_threads_of_a_new_thread() -> int:
    seen = []
    thread = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    thread.start()
    thread.join()
    return seen[0]


def test_a_new_pool_leaves_later_threads_the_process_torch_threads(two_torch_threads, monkeypatch):
    # a runner's bundle threads made after the pool must not inherit the pool threads' 1
    monkeypatch.setattr(passes, "_PASS_POOLS", {})  # this test starts its own pool
    seen = record_passes(True, [[0], [1], [2]])
    assert {threads for _, _, threads, _ in seen} == {1}
    assert torch_threads_of_a_new_thread() == 2
    seen_from_a_thread = []
    thread = threading.Thread(target=lambda: seen_from_a_thread.extend(record_passes(True, [[0], [1], [2], [3]])))
    thread.start()
    thread.join()
    assert {threads for _, _, threads, _ in seen_from_a_thread} == {1}
    assert thread.ident not in {ident for _, ident, _, _ in seen_from_a_thread}  # side by side from there too
    passes._PASS_POOLS[2].shutdown()


def test_one_at_a_time_runs_on_the_callers_threads_in_order(two_torch_threads):
    pass_rows = [[3], [1], [2]]
    seen = record_passes(False, pass_rows)
    assert [rows for rows, *_ in seen] == pass_rows
    assert {(ident, threads, inference) for _, ident, threads, inference in seen} == {(threading.get_ident(), 2, True)}


def test_a_single_pass_or_a_single_thread_is_not_handed_to_the_pool(two_torch_threads):
    assert {ident for _, ident, _, _ in record_passes(True, [[0]])} == {threading.get_ident()}
    torch.set_num_threads(1)
    assert {ident for _, ident, _, _ in record_passes(True, [[0], [1], [2]])} == {threading.get_ident()}


def test_an_error_in_a_side_by_side_pass_reaches_the_caller(two_torch_threads):
    def run_pass(rows: list[int]) -> None:
        if rows == [2]:
            raise ValueError("pass 2 failed")

    with pytest.raises(ValueError, match="pass 2 failed"):
        passes.run_passes(SimpleNamespace(side_by_side=True), run_pass, [[0], [1], [2], [3]])


def test_bf16_runs_side_by_side_where_native_unless_the_environment_says_no(monkeypatch):
    fp32 = models.load_model("stance", None, "fp32")
    monkeypatch.setattr(models, "cpu_has_bf16", lambda: True)
    monkeypatch.setattr(models, "cpu_has_vnni", lambda: False)
    assert models.to_bf16(fp32, pack=False).side_by_side
    assert not fp32.side_by_side and not models.quantize_int8(fp32).side_by_side
    monkeypatch.setenv(models.SIDE_BY_SIDE_ENV, "0")
    assert not models.to_bf16(fp32, pack=False).side_by_side
    monkeypatch.delenv(models.SIDE_BY_SIDE_ENV)
    monkeypatch.setattr(models, "cpu_has_bf16", lambda: False)
    assert not models.to_bf16(fp32, pack=False).side_by_side  # emulated bf16: not measured that way


def test_int8_runs_side_by_side_where_avx512_vnni_is_unless_the_environment_says_no(monkeypatch):
    from pipeline import malloc

    fp32 = models.load_model("stance", None, "fp32")
    monkeypatch.setattr(models, "cpu_has_vnni", lambda: True)
    int8 = models.quantize_int8(fp32)
    assert int8.side_by_side and int8.pack_rows == (malloc.replacement_malloc() == "tcmalloc")
    monkeypatch.setenv(models.SIDE_BY_SIDE_ENV, "0")
    one_at_a_time = models.quantize_int8(fp32)
    assert not one_at_a_time.side_by_side and not one_at_a_time.pack_rows
    monkeypatch.delenv(models.SIDE_BY_SIDE_ENV)
    monkeypatch.setattr(models, "cpu_has_vnni", lambda: False)  # the AVX2 VM: not measured that way
    avx2 = models.quantize_int8(fp32)
    assert not avx2.side_by_side and not avx2.pack_rows


def test_passes_side_by_side_without_amx_hold_fewer_tokens(monkeypatch):
    fp32 = models.load_model("stance", None, "fp32")
    assert fp32.max_pass_tokens == passes.MAX_PASS_TOKENS
    monkeypatch.setattr(models, "cpu_has_bf16", lambda: True)
    monkeypatch.setattr(models, "cpu_has_amx", lambda: False)  # AVX512-BF16 alone: AMD Zen 4
    small = models.to_bf16(fp32, pack=False)
    assert small.max_pass_tokens == passes.MAX_PASS_TOKENS_SIDE_BY_SIDE < passes.MAX_PASS_TOKENS
    lengths = [64] * 128  # 128 full packed rows: passes of 32 rows instead of 64
    assert [len(b) for b in passes.pass_batches(small, lengths, batch_size=64)] == [32] * 4
    monkeypatch.setattr(models, "cpu_has_amx", lambda: True)  # AMX's tiles want the larger passes
    amx = models.to_bf16(fp32, pack=False)
    assert amx.max_pass_tokens == passes.MAX_PASS_TOKENS
    assert [len(b) for b in passes.pass_batches(amx, lengths, batch_size=64)] == [64, 64]
    monkeypatch.setattr(models, "cpu_has_amx", lambda: False)
    monkeypatch.setenv(models.SIDE_BY_SIDE_ENV, "0")  # one pass at a time: the larger passes
    assert models.to_bf16(fp32, pack=False).max_pass_tokens == passes.MAX_PASS_TOKENS


@pytest.mark.slow
def test_side_by_side_gives_the_answers_of_one_at_a_time(seed_text, ner_model, stance_model, two_torch_threads):
    paragraphs = [p for p in seed_text.split("\n") if len(p.split()) > 5]
    for model, run, data in ((ner_model, ner.forward, [w for p in paragraphs for w in ner.preprocess(ner_model, p).windows]),
                             (stance_model, stance.forward, stance.preprocess(stance_model, paragraphs))):
        one, side = (dataclasses.replace(model, side_by_side=flag) for flag in (False, True))
        # a few rows a pass, so that the seed makes several passes
        expected, got = run(one, data, batch_size=8), run(side, data, batch_size=8)
        assert len(data) >= 16  # two passes or more
        if model.task == "ner":
            assert all(np.array_equal(a.argmax(1), b.argmax(1)) and np.allclose(a, b, atol=1e-2) for a, b in zip(expected, got))
        else:
            assert np.array_equal(expected.argmax(1), got.argmax(1)) and np.allclose(expected, got, atol=5e-2)
