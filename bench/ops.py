"""Where a model's forward passes spend their time, op by op (torch.profiler).

Run from the repository root:
``python -m bench.ops --corpus ../shared/data/polnear/train/text [--task ner] [--articles 40] [--precision auto]``.

It runs the pipeline's passes over the first N articles (their NER windows, or their sentences for
the stance model) once to warm up, then once under the profiler, and prints torch's table of ops by
self CPU time. The last line: ``task=… precision=… ops_s=… linear_share=… attention_share=…``
(ops_s: the ops' self CPU time, the passes without their Python; the shares: of that time, the
Linear layers' ops, ``addmm``, ``linear``, oneDNN's packed ``_linear_pointwise`` and int8's
``quantized::linear_dynamic``, and attention's, the SDPA kernels).
"""
from __future__ import annotations

import argparse
import dataclasses
import logging

from torch.profiler import ProfilerActivity, profile

from bench.packed import ner_windows, stance_inputs
from pipeline import models, ner, stance
from pipeline.evaluate import corpus_texts

LINEAR_OPS = ("aten::addmm", "aten::mm", "aten::linear", "mkldnn::_linear_pointwise", "quantized::linear_dynamic")
# not aten::_softmax: ner.forward's probabilities use it too
ATTENTION_OPS = ("aten::_scaled_dot_product_flash_attention_for_cpu", "aten::_scaled_dot_product_attention_math", "aten::bmm")


def passes(task: str, loaded: models.LoadedModel, texts: list[str]):
    """A function that runs the pipeline's forward passes of ``task`` over ``texts``."""
    if task == "ner":
        windows = ner_windows(loaded, texts)
        return lambda: ner.forward(loaded, windows)
    encoded = stance_inputs(loaded, texts)
    return lambda: stance.forward(loaded, encoded)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ops", description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", required=True, help="folder of articles (.txt, .jsonl, .html)")
    parser.add_argument("--task", choices=("ner", "stance"), default="ner")
    parser.add_argument("--articles", type=int, default=40, help="the first N articles (default: 40)")
    parser.add_argument("--precision", default="auto", help="auto, fp32, bf16 or int8 (default: auto)")
    parser.add_argument("--rows", type=int, default=25, help="ops in the table (default: 25)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    models.set_torch_threads(args.threads)

    # one pass at a time, so that the profile holds each op's own time (side by side, two passes' ops overlap)
    loaded = dataclasses.replace(models.load_model(args.task, None, args.precision), side_by_side=False)
    run = passes(args.task, loaded, corpus_texts(args.corpus, args.articles))
    run()  # oneDNN builds its kernels for each shape on first use
    with profile(activities=[ProfilerActivity.CPU]) as profiled:
        run()
    ops = profiled.key_averages()
    print(ops.table(sort_by="self_cpu_time_total", row_limit=args.rows))
    total = sum(op.self_cpu_time_total for op in ops)
    share = lambda names: sum(op.self_cpu_time_total for op in ops if op.key in names) / total
    print(f"task={args.task} precision={loaded.precision} ops_s={total / 1e6:.2f} "
          f"linear_share={share(LINEAR_OPS):.3f} attention_share={share(ATTENTION_OPS):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
