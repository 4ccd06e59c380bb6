"""pipeline.malloc: glibc's thresholds, a preloaded tcmalloc, and the re-exec that preloads it."""
import ctypes.util
import os
import platform
import subprocess
import sys

import pytest
import torch

from conftest import ROOT

GLIBC_ENV = ("GLIBC_TUNABLES", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
TCMALLOC = ctypes.util.find_library("tcmalloc_minimal")
needs_tcmalloc = pytest.mark.skipif(not TCMALLOC, reason="tcmalloc is not installed (Debian/Ubuntu: apt-get install libtcmalloc-minimal4)")


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without malloc settings, plus ``extra``."""
    dropped = (*GLIBC_ENV, "LD_PRELOAD", "NEWS_PIPELINE_MALLOC")
    return {**{k: v for k, v in os.environ.items() if k not in dropped}, **extra}


def test_freed_activations_are_not_faulted_in_again_on_every_pass(monkeypatch, ner_model):
    """Fixing the mmap threshold leaves glibc's trim threshold at 128 KiB unless it is set too: the
    activations freed at the heap's top went back to the OS after every pass and were faulted in
    again, thousands of page faults per NER pass of 16 windows (bench/RESULTS.md, "Page faults")."""
    import resource

    from pipeline.malloc import replacement_malloc, tune_malloc

    if not (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc") or replacement_malloc():
        pytest.skip("glibc's malloc only")
    for name in ("GLIBC_TUNABLES", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"):
        monkeypatch.delenv(name, raising=False)
    tune_malloc.cache_clear()
    assert tune_malloc()
    ids = torch.randint(1000, 20000, (16, 24), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ner_model.forward(ids, torch.ones_like(ids), torch.zeros_like(ids))
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(5):
            ner_model.forward(ids, torch.ones_like(ids), torch.zeros_like(ids))
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5 < 2000


def test_large_frees_go_back_to_the_os_on_glibc(monkeypatch):
    from pipeline.malloc import replacement_malloc, tune_malloc

    if replacement_malloc():
        pytest.skip(f"{replacement_malloc()} is preloaded: glibc's malloc is not in use")
    tune_malloc.cache_clear()
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    assert tune_malloc() is (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc")
    tune_malloc.cache_clear()
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "1048576")  # the user's own setting wins
    assert tune_malloc() is False
    tune_malloc.cache_clear()


def test_a_preloaded_malloc_is_recognised_from_the_memory_map():
    from pipeline.malloc import allocator_in

    glibc_only = ("7f2c1a000000-7f2c1a022000 r--p 00000000 08:01 1234 /usr/lib/x86_64-linux-gnu/libc.so.6\n"
                  "7f2c1a200000-7f2c1a300000 r-xp 00000000 08:01 99 /work/.venv/lib/python3.11/site-packages/torch/lib/libtorch_cpu.so\n")
    assert allocator_in(glibc_only) is None
    assert allocator_in(glibc_only + "7f2c1b000000-7f2c1b010000 r-xp 00000000 08:01 77 "
                        "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4.5.10\n") == "tcmalloc"
    assert allocator_in(glibc_only + "7f2c1b000000-7f2c1b010000 r-xp 00000000 08:01 77 /usr/lib/libjemalloc.so.2\n") == "jemalloc"
    assert allocator_in("") is None


@needs_tcmalloc
def test_tcmalloc_preloaded_leaves_glibc_settings_alone():
    """The image preloads tcmalloc (deploy/Dockerfile); the glibc thresholds must then not be set."""
    done = subprocess.run([sys.executable, "-c", "from pipeline.malloc import replacement_malloc, tune_malloc; "
                           "print(replacement_malloc(), tune_malloc())"],
                          env=clean_env(LD_PRELOAD=TCMALLOC), cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["tcmalloc", "False"]


# What a command that starts with reexec_with_tcmalloc() runs on: its malloc, and the choice it leaves
# in the environment for the processes it starts.
REEXEC_SCRIPT = """
import os, sys
sys.path.insert(0, {root!r})
from pipeline.malloc import reexec_with_tcmalloc, replacement_malloc
print("started", flush=True)
reexec_with_tcmalloc()
print(replacement_malloc(), os.environ.get("NEWS_PIPELINE_MALLOC"), sys.argv[1:])
"""


def run_reexec_script(tmp_path, **env: str) -> list[str]:
    script = tmp_path / "command.py"
    script.write_text(REEXEC_SCRIPT.format(root=str(ROOT)))
    done = subprocess.run([sys.executable, "-u", str(script), "--input", "a b"], env=clean_env(**env),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.splitlines()


@needs_tcmalloc
def test_commands_start_again_on_tcmalloc_once_with_their_arguments(tmp_path):
    lines = run_reexec_script(tmp_path)
    assert lines == ["started", "started", "tcmalloc tcmalloc ['--input', 'a b']"]  # one re-exec, arguments intact


def test_the_user_can_keep_glibc_and_their_own_preload_wins(tmp_path):
    assert run_reexec_script(tmp_path, NEWS_PIPELINE_MALLOC="glibc") == ["started", "None glibc ['--input', 'a b']"]
    if TCMALLOC:  # an LD_PRELOAD of the user's own is left as it is: no second exec
        assert run_reexec_script(tmp_path, LD_PRELOAD=TCMALLOC) == ["started", "tcmalloc None ['--input', 'a b']"]


def test_without_tcmalloc_the_command_goes_on_with_glibc(tmp_path, monkeypatch):
    from pipeline import malloc

    monkeypatch.setattr(malloc, "tcmalloc_library", lambda: None)
    monkeypatch.setattr(malloc, "replacement_malloc", lambda: None)
    monkeypatch.delenv("NEWS_PIPELINE_MALLOC", raising=False)
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    monkeypatch.setattr(os, "execve", lambda *a: pytest.fail("no tcmalloc: nothing to exec"))
    assert malloc.reexec_with_tcmalloc() is None
