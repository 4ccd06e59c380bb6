"""Start-up: loading both default models the usual way (decode the compact weights, then quantize or
cast them) against from their prepared files (``pipeline.prepared``), each in a fresh process.

Run from the repository root: ``python -m bench.load [--rounds 5]``.

Each round starts one process per way, in alternating order (this VM's speed moves minute to
minute), with warm imports, and times ``models.load_model`` for the NER and then the stance model
(precision ``auto``). The prepared files go to a temporary ``NEWS_PIPELINE_MODEL_CACHE``, written by a
first process that is timed too (the usual load plus the writing). The processes run on tcmalloc
where it is installed, as ``python -m pipeline`` does.

The last line: ``usual_s_median=… prepared_s_median=… first_run_s=… speedup=…``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

from pipeline import malloc, prepared

CHILD = """
import json, logging, os, time, warnings
warnings.filterwarnings("ignore")
prepared_loads = []  # the loader logs where each model came from


class FromPrepared(logging.Handler):
    def emit(self, record):
        if "weights from" in record.getMessage():
            prepared_loads.append(record.getMessage())


logging.getLogger("pipeline.models").addHandler(FromPrepared())
logging.getLogger("pipeline.models").setLevel(logging.INFO)
import transformers.models.bert.modeling_bert  # the imports the pipeline has made before it loads
from pipeline import models
start = time.perf_counter()
ner = models.load_model("ner", None)
middle = time.perf_counter()
stance = models.load_model("stance", None)
end = time.perf_counter()
print(json.dumps({"ner": middle - start, "stance": end - middle, "total": end - start,
                  "models": [ner.name, stance.name], "from_prepared": len(prepared_loads)}))
"""


def _load_once(cache: str, use_prepared: bool) -> dict:
    env = dict(os.environ, NEWS_PIPELINE_MODEL_CACHE=cache, HF_HUB_OFFLINE="1")
    env[prepared.PREPARED_ENV] = "1" if use_prepared else "0"
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-load-") as cache:
        first = _load_once(cache, use_prepared=True)
        print(f"first run (usual load, then the prepared files written): {first['total']:.3f} s ({' and '.join(first['models'])})")
        times: dict[str, list[float]] = {"usual": [], "prepared": []}
        for round_ in range(args.rounds):
            order = ("usual", "prepared") if round_ % 2 == 0 else ("prepared", "usual")
            line = []
            for way in order:
                result = _load_once(cache, use_prepared=way == "prepared")
                if result["from_prepared"] != (2 if way == "prepared" else 0):
                    raise SystemExit(f"{way} load: {result['from_prepared']} of 2 models came from prepared files")
                times[way].append(result["total"])
                line.append(f"{way} {result['total']:.3f} s (ner {result['ner']:.3f}, stance {result['stance']:.3f})")
            print(f"round {round_ + 1}: " + "; ".join(line))
    usual, ready = statistics.median(times["usual"]), statistics.median(times["prepared"])
    print(f"usual_s_median={usual:.3f} prepared_s_median={ready:.3f} first_run_s={first['total']:.3f} speedup={usual / ready:.2f}")
    return 0


if __name__ == "__main__":
    malloc.reexec_with_tcmalloc()  # the children inherit it, as the pipeline's workers run on it
    sys.exit(main())
