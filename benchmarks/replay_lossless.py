"""How many clouds of a bag get a recorded Detection3DArray, over N evaluation replays (both entry points).

    python benchmarks/replay_lossless.py --bag data/default_drive --runs 10 [--launch-runs 3] --out out/lossless

`perception replay --bag B --record R` (stops when every cloud is answered), and `perception launch
launch/replay.launch.yaml bag:=B record:=true record_bag:=R` (SIGINT once the player is done and the graph quiet).
Prints answered/clouds per run and the DDS latency p50 of each; one JSON line per run in OUT/runs.jsonl.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from perception.eval.replay import score_recording

REPO = Path(__file__).resolve().parents[1]


def _one(cmd: list[str], record: Path, launch: bool) -> dict:
    t0 = time.monotonic()
    if not launch:
        subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    else:
        log = record.with_suffix(".log")
        with log.open("w") as f:
            proc = subprocess.Popen(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT)
            while proc.poll() is None and "finished:" not in log.read_text():
                time.sleep(0.5)
            time.sleep(30.0)  # the detector's lossless queue drains (seconds of backlog on a loaded machine)
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
    m = score_recording(record, ["Car", "Pedestrian", "Cyclist"])
    return {"entry": "launch" if launch else "replay", "clouds": m["frames"]["clouds"],
            "answered": m["frames"]["answered"], "latency_p50_ms": (m["latency_ms"] or {}).get("p50"),
            "replay_s": m["replay_s"], "wall_s": round(time.monotonic() - t0, 1)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bag", default="data/default_drive")
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--launch-runs", type=int, default=3)
    p.add_argument("--out", type=Path, default=REPO / "out" / "lossless")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    bag = str(Path(args.bag).resolve())
    rows = []
    for i in range(args.runs + args.launch_runs):
        launch = i >= args.runs
        record = args.out / f"run{i:02d}"
        cmd = ([sys.executable, "-m", "perception.cli", "launch", "launch/replay.launch.yaml", f"bag:={bag}",
                "record:=true", f"record_bag:={record}", "record_force:=true"] if launch else
               [sys.executable, "-m", "perception.cli", "replay", "--bag", bag, "--record", str(record), "--force"])
        row = _one(cmd, record, launch)
        rows.append(row)
        print(json.dumps(row), flush=True)
        with (args.out / "runs.jsonl").open("a") as f:
            f.write(json.dumps(row) + "\n")
    for entry in ("replay", "launch"):
        sel = [r for r in rows if r["entry"] == entry]
        if sel:
            full = sum(r["answered"] == r["clouds"] for r in sel)
            print(f"{entry}: every cloud answered in {full} of {len(sel)} runs; answered "
                  f"{[r['answered'] for r in sel]} of {sel[0]['clouds']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
