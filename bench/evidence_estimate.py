"""Expected compute of the evidence protocol (or another version of it) from the committed run's wall times.

    python bench/evidence_estimate.py                  # the shipped protocol, rates from bench/results/evidence
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from robustft.bench import load_protocol
from robustft.bench.estimate import estimate_protocol
from robustft.bench.runner import bench_roots

ROOT = Path(__file__).resolve().parents[1]
PROTOCOL = "src/robustft/assets/protocols/evidence.yaml"
# train (after the validation carve-out) / val / test images of each task's data without a subset
COUNTS = {"cifar10": {"train": 45000, "val": 5000, "test": 10000},
          "gtsrb32": {"train": 7918, "val": 1112, "test": 12630}}


def main() -> int:
    """Print seconds per task and the total, in hours."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--protocol", default=str(ROOT / PROTOCOL), help="protocol to estimate")
    p.add_argument("--results", type=Path, default=ROOT / "bench/results/evidence", help="committed report dir")
    args = p.parse_args()
    record = json.loads((args.results / "results.json").read_text())
    sha = record["provenance"]["git_sha"]  # the protocol as it was when the committed cells ran
    old = subprocess.run(["git", "-C", str(ROOT), "show", f"{sha}:{PROTOCOL}"], capture_output=True, text=True,
                         check=True).stdout
    with tempfile.TemporaryDirectory() as tmp:
        committed = Path(tmp) / "evidence.yaml"
        committed.write_text(old)
        protocol, before = load_protocol(args.protocol), load_protocol(committed)
    counts = {name: COUNTS["gtsrb32" if "gtsrb" in str(t.config["data"]["name"]) else "cifar10"]
              for name, t in {**before.tasks, **protocol.tasks}.items()}
    out = estimate_protocol(protocol, before, record, bench_roots(), counts)
    print(yaml.safe_dump({k: {kk: round(vv) for kk, vv in v.items()} for k, v in out["tasks"].items()}))
    print(f"total: {out['total_s']:.0f} s = {out['total_s'] / 3600:.2f} h (see robustft.bench.estimate: "
          f"committed seconds per pass; grid extensions and added seeds at their caps)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
