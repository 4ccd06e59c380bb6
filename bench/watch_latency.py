"""How soon rows appear while `watch` runs: `python -m bench.watch_latency [--files N] [--every S]`.

Starts `python -m pipeline watch` on an empty inbox, drops N distinct articles (the seed article
with a numbered first line) every S seconds, written then renamed in, and records for each the
seconds from its rename to its articles row being queryable through the DuckDB views. Then it
sends SIGINT and checks the drain. Last line: `files=… median_latency_s=… max_latency_s=… drained=…`.
"""
from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "seeds" / "000_19690041f8aceda6.txt"


def articles_visible(out: Path) -> set[str]:
    from pipeline.query import connect

    try:
        return {row[0] for row in connect(str(out)).execute("SELECT source_uri FROM articles").fetchall()}
    except Exception:  # nothing written yet
        return set()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10)
    parser.add_argument("--every", type=float, default=3.0, help="seconds between drops")
    parser.add_argument("--poll_interval", type=float, default=2.0)
    parser.add_argument("--timeout", type=float, default=120.0, help="give up on a file after this many seconds")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="watch-latency-"))
    inbox, out = work / "inbox", work / "out"
    inbox.mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    watch = subprocess.Popen([sys.executable, "-m", "pipeline", "watch", "--input", str(inbox), "--output", str(out),
                              "--poll_interval", str(args.poll_interval)],
                             cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seed = SEED.read_text()
    latencies: list[float] = []
    try:
        time.sleep(15)  # model loading; the first file would otherwise measure start-up
        for i in range(args.files):
            name = f"article-{i:04d}.txt"
            temporary = inbox / f".{name}.tmp"
            temporary.write_text(f"Bulletin {i}.\n{seed}")
            dropped = time.time()
            temporary.rename(inbox / name)
            while time.time() - dropped < args.timeout and not any(uri.endswith(name) for uri in articles_visible(out)):
                time.sleep(0.1)
            latency = time.time() - dropped
            latencies.append(latency)
            print(f"{name}: rows queryable after {latency:.1f} s", flush=True)
            time.sleep(max(0.0, args.every - latency))
    finally:
        watch.send_signal(signal.SIGINT)
        log, _ = watch.communicate(timeout=180)
    drained = watch.returncode == 0 and f"records={args.files} " in log
    print(f"files={args.files} median_latency_s={statistics.median(latencies):.2f} "
          f"max_latency_s={max(latencies):.2f} drained={drained}")
    return 0 if drained else 1


if __name__ == "__main__":
    raise SystemExit(main())
