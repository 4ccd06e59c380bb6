"""Entry point of the Dataflow Flex Template launcher (FLEX_TEMPLATE_PYTHON_PY_FILE in deploy/Dockerfile).

The launcher VM runs ``python flex_main.py --input=... --output=... --project=... ...``. This script
does what ``python -m pipeline run`` does (fail-fast input and model checks, the same graph) but
submits the job and returns WITHOUT waiting: a Flex Template launcher that waits for the job to
finish blocks the launch until it times out. The job's counters are in the Dataflow UI.
"""
from __future__ import annotations

import logging
import os
import sys

# Flex Templates pass every parameter as --name=value; these flags are store_true in NewsPipelineOptions.
BOOLEAN_FLAGS = ("large_model", "direct_quotes_only")
TRUE = ("true", "1", "yes")


def normalise(argv: list[str]) -> list[str]:
    """--large_model=true -> --large_model, --large_model=false -> (dropped); default the runner and the
    worker image (the launcher runs in the same image the workers need; NEWS_PIPELINE_IMAGE is set
    at build time by deploy/launch.sh)."""
    out = []
    for arg in argv:
        name, _, value = arg.partition("=")
        if name.lstrip("-") in BOOLEAN_FLAGS and value:
            if value.strip().lower() in TRUE:
                out.append(name)
            continue
        out.append(arg)
    if not any(a.split("=")[0] == "--runner" for a in out):
        out.insert(0, "--runner=DataflowRunner")
    image = os.environ.get("NEWS_PIPELINE_IMAGE")
    if image and not any(a.split("=")[0] in ("--sdk_container_image", "--worker_harness_container_image") for a in out):
        out.append(f"--sdk_container_image={image}")
    if not any(a.split("=")[0] == "--sdk_location" for a in out):
        out.append("--sdk_location=container")  # the image already holds Beam 2.77: stage no SDK tarball
    return out


def main(argv: list[str]):
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline import graph
    from pipeline.options import NewsPipelineOptions
    from pipeline.read import check_input
    from pipeline.run import check_models, make_pipeline

    options = PipelineOptions(normalise(argv))
    news = options.view_as(NewsPipelineOptions)
    check_input(news.input)
    check_models(news)
    p = make_pipeline(options)
    graph.build(p, news)
    result = p.run()  # no wait_until_finish(): see the module docstring
    job_id = result.job_id() if hasattr(result, "job_id") else None
    logging.getLogger(__name__).info("submitted job %s (state %s); not waiting for it", job_id, result.state)
    return result


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main(sys.argv[1:])
