"""Measured and dropped: OpenVINO, Intel's own inference runtime, in place of torch for the forward passes.

Run from the repository root, in a process without tcmalloc (see below):
``pip install -e '.[bench]'`` (``make install`` does), then
``python -m bench.openvino --corpus ../shared/data/polnear/train/text [--articles 100] [--rounds 5]``.

Each default model, as the pipeline runs it (``models.load_model``, precision ``auto``), is set
against the same fp32 weights converted by ``openvino.convert_model`` (any batch and sequence length)
and compiled for the CPU in the precision OpenVINO picks for it: bf16 where the CPU has native bf16,
fp32 elsewhere (OpenVINO's default; it has no dynamic int8 like the pipeline's AVX2 models). Both run
the pipeline's own passes through ``ner.forward`` / ``stance.forward`` (``bench.packed.compare``):
outputs and labels compared, then alternating timed rounds in one process. It also prints what
converting and compiling a model costs at start-up, which the pipeline's models do not pay.

On the 2-core AMX VM (2026-12-03), bench/RESULTS.md "OpenVINO": a little faster than torch in bf16
with packed weights, labels moved on more words and texts than packing does, and a few seconds of
start-up a model, so the pipeline stays on torch.

OpenVINO's CPU plugin aborts (``free(): invalid pointer``) in a process with tcmalloc or jemalloc
preloaded (openvinotoolkit/openvino#29025, uxlfoundation/oneTBB#1645): it crashed on this VM in
``compile_model``. The pipeline and the Docker image run on tcmalloc, so this bench refuses to start
in such a process, and both of its sides run on glibc's malloc.

The last line is bench.packed's, with ``openvino`` as the second model.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import torch
from torch import nn

from bench.packed import arguments, compare
from pipeline import malloc, models
from pipeline.evaluate import corpus_texts

LOG = logging.getLogger(__name__)

# The version the figures in bench/RESULTS.md come from (pyproject.toml's `bench` extra).
OPENVINO_VERSION = "2026.4.1"


class EncoderWithCasing(nn.Module):
    """``LoadedModel.forward`` as one module with plain tensor inputs, for the converter to trace:
    ids, mask (and, for a model trained with it, the casing ids) in, logits out."""

    def __init__(self, loaded: models.LoadedModel):
        super().__init__()
        self.model, self.case_embeddings = loaded.model, loaded.case_embeddings

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, case_ids: torch.Tensor | None = None) -> torch.Tensor:
        if self.case_embeddings is None:
            return self.model(input_ids=input_ids, attention_mask=attention_mask).logits
        embeddings = self.model.get_input_embeddings()(input_ids) + self.case_embeddings(case_ids)
        return self.model(inputs_embeds=embeddings, attention_mask=attention_mask).logits


@dataclasses.dataclass
class OpenVinoModel(models.LoadedModel):
    """A LoadedModel whose forward runs an OpenVINO compiled model; tokenizer, labels and the
    pipeline's batching (``precision``) are the torch model's, so both run the same passes."""

    compiled: Any = None
    inputs: int = 2

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, case_ids: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, first_tokens: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        if position_ids is not None or first_tokens is not None:
            raise ValueError("the converted graph takes an input a row (pack_rows off)")
        feed = [input_ids.numpy(), attention_mask.numpy()]
        if self.inputs == 3:
            feed.append(case_ids.numpy())
        return torch.from_numpy(self.compiled(feed)[0])


def openvino_module():
    """``openvino``, or a clear exit where it cannot run here."""
    preloaded = malloc.replacement_malloc()
    if preloaded:
        raise SystemExit(f"{preloaded} is preloaded in this process, and OpenVINO's CPU plugin aborts with a preloaded malloc "
                         "(openvinotoolkit/openvino#29025): run this bench without LD_PRELOAD")
    try:
        import openvino
    except ImportError:
        raise SystemExit(f"OpenVINO is not installed: pip install -e '.[bench]' (openvino=={OPENVINO_VERSION})") from None
    if openvino.__version__.split("-")[0] != OPENVINO_VERSION:
        LOG.warning("openvino %s, not the %s that bench/RESULTS.md's figures come from", openvino.__version__, OPENVINO_VERSION)
    return openvino


def openvino_copy(pipeline_model: models.LoadedModel, fp32: models.LoadedModel) -> tuple[OpenVinoModel, float]:
    """``fp32`` converted and compiled by OpenVINO, batched like ``pipeline_model``; and the seconds it took."""
    ov = openvino_module()
    started = time.perf_counter()
    module = EncoderWithCasing(fp32).eval()
    example = torch.ones(2, 16, dtype=torch.long)
    inputs = (example, example) + ((torch.zeros_like(example),) if fp32.case_embeddings is not None else ())
    with torch.no_grad():  # the converter traces the module: inference tensors cannot be traced
        converted = ov.convert_model(module, example_input=inputs, input=[ov.PartialShape([-1, -1])] * len(inputs))
    precision = "bf16" if models.cpu_has_bf16() else "f32"
    threads = str(torch.get_num_threads())
    compiled = ov.Core().compile_model(converted, "CPU", {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY",
                                                          "INFERENCE_NUM_THREADS": threads})
    fields = {f.name: getattr(pipeline_model, f.name) for f in dataclasses.fields(models.LoadedModel)}
    fields["name"] = f"{fp32.name}+openvino-{precision}"
    fields["side_by_side"] = False  # one compiled model's infer request: one pass at a time (OpenVINO threads it)
    fields["pack_rows"] = False  # the converted graph takes (rows, width) masks only
    return OpenVinoModel(**fields, compiled=compiled, inputs=len(inputs)), time.perf_counter() - started


def pipeline_and_openvino(task: str) -> tuple[models.LoadedModel, OpenVinoModel]:
    pipeline_model = models.load_model(task, None)
    openvino_model, seconds = openvino_copy(pipeline_model, models.load_model(task, None, "fp32"))
    print(f"{task}: torch {pipeline_model.precision} against OpenVINO {openvino_model.name.rsplit('-', 1)[1]}; "
          f"converting and compiling took {seconds:.1f} s", flush=True)
    return pipeline_model, openvino_model


def main(argv: list[str] | None = None) -> int:
    args = arguments("python -m bench.openvino", __doc__.split("\n\n")[0], ("torch", "openvino"), argv)
    openvino_module()  # fail before loading anything
    texts = corpus_texts(args.corpus, args.articles)
    print(compare(texts, pipeline_and_openvino("ner"), pipeline_and_openvino("stance"), args.rounds, ("torch", "openvino")).last_line())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
