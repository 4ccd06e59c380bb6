"""Cloud streaming inputs (Pub/Sub, gs://): the graph a Dataflow streaming job would get constructs
and translates (nothing can reach the cloud here); Pub/Sub messages parse like JSONL lines."""
import pytest

from pipeline.inbox import parse_message, subscription_of
from pipeline.read import ErrorRecord

BUCKET = "gs://news-pipeline-test-bucket"
STREAMING_ARGS = [
    "--runner=DataflowRunner", "--project=news-project", "--region=us-central1", "--streaming",
    "--enable_streaming_engine", f"--temp_location={BUCKET}/tmp", f"--staging_location={BUCKET}/staging",
    "--sdk_container_image=us-central1-docker.pkg.dev/news-project/news/pipeline:test", "--sdk_location=container",
    "--job_name=news-watch-test", "--dry_run=True",
]


def test_messages_parse_like_jsonl_lines():
    article = parse_message("pubsub://s#1", b'{"text": "The envoy said talks would resume.", "title": "Talks"}')
    assert article.title == "Talks" and article.source_uri == "pubsub://s#1"
    assert parse_message("pubsub://s#2", "Plain text article about a truce.".encode()).text.startswith("Plain")
    assert parse_message("pubsub://s#3", b"{broken").error == "json"
    assert parse_message("pubsub://s#4", b'{"title": "x"}').error == "no_text"
    assert isinstance(parse_message("pubsub://s#5", b"\xff\xfe\x00\x00garbage\x00"), ErrorRecord)


def test_subscription_uri_is_checked():
    assert subscription_of("pubsub://projects/p/subscriptions/s") == "projects/p/subscriptions/s"
    with pytest.raises(ValueError, match="pubsub://projects/PROJECT/subscriptions/SUBSCRIPTION"):
        subscription_of("pubsub://topics/t")


@pytest.mark.parametrize("source, first_stage", [
    ("pubsub://projects/news-project/subscriptions/articles", "ReadPubSub"),
    (f"{BUCKET}/inbox/", "WatchInbox"),
])
def test_streaming_dataflow_graph_constructs_and_translates(source, first_stage):
    pytest.importorskip("google.cloud.pubsub", reason="needs apache-beam[gcp]")
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.options.pipeline_options_validator import PipelineOptionsValidator

    from pipeline import graph
    from pipeline.options import NewsPipelineOptions

    options = PipelineOptions(STREAMING_ARGS + [f"--input={source}", f"--output={BUCKET}/out/"])
    p = beam.Pipeline(options=options)
    graph.build(p, options.view_as(NewsPipelineOptions), streaming=True)
    assert PipelineOptionsValidator(options, p.runner).validate() == []
    names = {t.unique_name for t in p.to_runner_api().components.transforms.values()}
    for stage in (first_stage, "NER", "FindQuotes", "Stance", "WriteArticles"):
        assert stage in names
    assert "DropDuplicates" not in names  # a GroupByKey would hold rows back in streaming
    p.run()  # dry run: Dataflow's streaming translation, nothing submitted
