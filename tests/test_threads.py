"""--torch_threads: each worker process's share of the cores, so that processes sharing a machine
do not oversubscribe it (bench/RESULTS.md "Threads")."""
import pytest
import torch
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.options import torch_threads


def threads_for(*argv: str, cores: int = 8, monkeypatch=None) -> int | None:
    monkeypatch.setattr("pipeline.options.os.cpu_count", lambda: cores)
    return torch_threads(PipelineOptions(list(argv)))


@pytest.mark.parametrize("argv, expected", [
    ((), None),  # one in-process worker: torch's own default (every core)
    (("--direct_num_workers=2", "--direct_running_mode=multi_threading"), None),  # one process
    (("--direct_num_workers=2", "--direct_running_mode=multi_processing"), 4),
    (("--direct_num_workers=3", "--direct_running_mode=multi_processing"), 2),
    (("--direct_num_workers=0", "--direct_running_mode=multi_processing"), 1),  # 0: a worker per core
    (("--direct_num_workers=16", "--direct_running_mode=multi_processing"), 1),
    (("--runner=DataflowRunner",), 1),  # an SDK process per vCPU
    (("--runner=DataflowRunner", "--experiments=no_use_multiple_sdk_containers"), None),
    (("--runner=DataflowRunner", "--large_model"), None),  # the models live in one process per VM
    (("--runner=FlinkRunner",), None),
    (("--runner=DataflowRunner", "--torch_threads=2"), 2),  # asked for: always wins
    (("--torch_threads=3",), 3),
])
def test_each_process_gets_its_share_of_the_cores(argv, expected, monkeypatch):
    assert threads_for(*argv, monkeypatch=monkeypatch) == expected


def test_a_negative_thread_count_fails_clearly(tmp_path, capsys):
    from pipeline.cli import main

    assert main(["run", "--input", str(tmp_path), "--output", str(tmp_path / "o"), "--torch_threads=-1"]) == 2
    assert "--torch_threads must be 0 (auto) or more" in capsys.readouterr().err


@pytest.mark.slow
def test_the_model_handlers_set_the_threads_in_the_worker_process():
    from pipeline.ner import NerModelHandler
    from pipeline.stance import StanceModelHandler

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        NerModelHandler(torch_threads=1).load_model()
        assert torch.get_num_threads() == 1
        torch.set_num_threads(2)
        StanceModelHandler(torch_threads=1).load_model()
        assert torch.get_num_threads() == 1
        torch.set_num_threads(2)
        NerModelHandler(torch_threads=None).load_model()  # auto where one process has the machine
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
