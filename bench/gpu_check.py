"""One-command GPU check (scripts/gpu_check.sh): the device tests, ResNet-50 PGD-10 training throughput, and a reduced
gpu-paper protocol, written to bench/results/gpu/<device>/.

(1) ``pytest -m cuda`` on the device (ROBUSTFT_TEST_DEVICE); (2) bench/perf.py with ResNet-50 at 224 px, batch 128,
PGD-10, ``pgd_at`` through the engine (uint8 data on the device, channels_last, bf16 autocast) and the seed-style loop,
in bf16 and fp32, against the device's measured convolution and matrix-product peak (perf.md: the columns of
bench/results/perf.md); (3) the shipped gpu-paper protocol with fewer images, epochs and attack steps (every task and
cell, a smoke run of the protocol at GPU scale, not evidence for its claims). Each step's wall time is recorded; the
check goes on after a failed step and exits non-zero if any failed.

``--tiny`` (with ``--device cpu``, what the test suite runs): only the data device tests run (the suite runs the
others itself), perf.py measures a CIFAR ResNet-20 on a few images, and the protocol keeps its source task at test size
on the dataset --data-root names (an .npz directory).
Usage: python bench/gpu_check.py [--device auto] [--tiny] [--out DIR] [--data-root ../shared/data] [--runs DIR]
"""

import argparse
import json
import os
import re
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import yaml

from robustft._io import atomic_write, atomic_write_json
from robustft.runtime import provenance, resolve_device

ROOT = Path(__file__).resolve().parents[1]
GOAL_IMAGES_PER_S = 600  # ResNet-50 @224 PGD-10 bf16 on one H100: the clean-training ceiling / 7.7 forward-equivalents
PERF = {  # bench/perf.py arguments: the papers' workload on a GPU, a few CIFAR images for --tiny
    "full": ["--arch", "resnet50", "--image-size", "224", "--batch-size", "128", "--images", "1280", "--steps", "10"],
    "tiny": ["--arch", "cifar_resnet20", "--image-size", "32", "--batch-size", "8", "--images", "16", "--steps", "1"],
}
TESTS = {"full": [], "tiny": ["tests/data/test_device_data.py"]}  # --tiny: the quickest (the suite runs the rest)
# Per task of the gpu-paper protocol: data, epochs and attack settings of the reduced run (full: minutes on one GPU).
REDUCED = {
    "full": {"data": {"train_n": 10000, "test_n": 2000}, "epochs": 2, "attack_steps": None, "val_steps": 5,
             "test_steps": 10, "autoattack": {"n": 200, "version": "custom", "attacks": ["apgd-ce", "apgd-t"]},
             "mrc_n": 128, "corruptions": {"corruptions": ["gaussian_noise", "fog"], "corruption_n": 500},
             "tasks": None},
    "tiny": {"data": {"name": "{data}", "train_n": 64, "val_n": 16, "test_n": 32, "batch_size": 32,
                      "eval_batch_size": 64, "image_size": 16},
             "epochs": 1, "attack_steps": 1, "val_steps": 1, "test_steps": 1,
             "autoattack": {"n": 8, "version": "custom", "attacks": ["apgd-ce"]}, "mrc_n": 16,
             "corruptions": {"corruptions": ["gaussian_noise"], "corruption_severities": [1], "corruption_n": 16},
             "tasks": ["source"]},
}


def device_name(device: torch.device) -> str:
    """The accelerator's product name (``NVIDIA H100 80GB HBM3``), else ``cpu``."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def slug(name: str) -> str:
    """A directory name for a device name: lower case, runs of other characters as one dash."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def reduced_protocol(size: str) -> dict[str, Any]:
    """The shipped gpu-paper protocol with the ``REDUCED[size]`` settings applied to every task it keeps."""
    r = REDUCED[size]
    protocol = yaml.safe_load((resources.files("robustft") / "assets/protocols/gpu-paper.yaml").read_text())
    protocol["name"] = f"gpu-paper-reduced-{size}"
    protocol["description"] = f"gpu-paper reduced by bench/gpu_check.py ({size}): a smoke run, not evidence. " + \
        protocol["description"]
    if r["tasks"]:
        protocol["tasks"] = {k: v for k, v in protocol["tasks"].items() if k in r["tasks"]}
        protocol["claims"] = [c for c in protocol.get("claims", []) if c["task"] in r["tasks"]]
    for task in protocol["tasks"].values():
        cfg = task["config"]
        cfg["data"].update(r["data"])
        cfg["train"]["epochs"] = min(cfg["train"]["epochs"], r["epochs"])
        if r["attack_steps"]:
            cfg["attack"].update(steps=r["attack_steps"])
            cfg["attack"].pop("step_size", None)
        cfg["eval"].update(val_steps=r["val_steps"], test_steps=r["test_steps"])
        if "corruptions" in cfg["eval"]:
            cfg["eval"].update(r["corruptions"])
        if "mrc_n" in cfg.get("method_args", {}):
            cfg["method_args"]["mrc_n"] = r["mrc_n"]
        if "autoattack" in task:
            task["autoattack"].update(r["autoattack"])
        if cfg.get("optim", {}).get("schedule") == "multistep":
            cfg["optim"]["milestones"] = [1]
        if size == "tiny":  # ResNet-18's layout at 1/8 of its width, on the npz directory --data-root names
            cfg["model"]["options"] = {"widths": [8, 16, 32, 64]}
    return protocol


def step(name: str, argv: list[str], env: dict[str, str], log: list[dict[str, Any]]) -> str:
    """Run one step of the check as a child process, echoing its output; records its wall time and exit status."""
    print(f"[gpu_check] {name}: {' '.join(argv)}", flush=True)
    t = time.perf_counter()
    proc = subprocess.run(argv, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    print(proc.stdout, end="", flush=True)
    log.append({"step": name, "command": " ".join(argv), "returncode": proc.returncode,
                "wall_s": round(time.perf_counter() - t, 1)})
    return proc.stdout


def headline(perf: dict[str, Any]) -> list[str]:
    """The throughput lines: pgd_at per precision, its ratio to the seed-style loop, and the goal."""
    lines = []
    for r in perf["rows"]:
        if r["label"] == "pgd_at":
            lines.append(f"- pgd_at {r['precision']}: {r['images_per_s']:.1f} img/s, {r['x_seed_style']:.2f}× the "
                         f"seed-style loop, {100 * r['fraction_of_peak']:.0f}% of the measured conv peak")
    bf16 = next((r for r in perf["rows"] if r["label"] == "pgd_at" and r["precision"] == "bf16"), None)
    if bf16 is not None and perf["arch"] == "resnet50" and perf["image_size"] == 224:
        met = bf16["images_per_s"] >= GOAL_IMAGES_PER_S and bf16["x_seed_style"] >= 2
        lines.append(f"- goal (≥ {GOAL_IMAGES_PER_S} img/s and ≥ 2× the seed-style loop in bf16, one H100): "
                     f"{'met' if met else 'not met'} on this device")
    return lines


def main() -> int:
    """Run the three steps and write the summary; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--tiny", action="store_true", help="test-suite size (seconds on a CPU)")
    parser.add_argument("--out", type=Path, default=None, help="default bench/results/gpu/<device name>")
    parser.add_argument("--data-root", type=Path, default=ROOT.parent / "shared" / "data",
                        help="the gpu-paper protocol's data root (cifar10-jpeg/, cifar100/)")
    parser.add_argument("--runs", type=Path, default=None,
                        help="where the protocol's run directories go (default runs/gpu_check/<device name>)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    name, size = device_name(device), "tiny" if args.tiny else "full"
    out = args.out or ROOT / "bench" / "results" / "gpu" / slug(name)
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "ROBUSTFT_TEST_DEVICE": str(device),
           "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    if device.type == "cuda":
        env.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    log: list[dict[str, Any]] = []
    start = time.perf_counter()
    tests = step("pytest -m cuda", [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider",
                                    *TESTS[size]], env, log)
    step("perf", [sys.executable, "bench/perf.py", "--device", str(device), *PERF[size], "--methods", "pgd_at",
                  "--precisions", "bf16,fp32", "--mrc-n", "0", "--out-dir", str(out / "perf")], env, log)
    protocol = out / "gpu-paper-reduced.yaml"
    protocol.write_text(yaml.safe_dump(reduced_protocol(size), sort_keys=False, allow_unicode=True))
    runs = args.runs or ROOT / "runs" / "gpu_check" / slug(name)
    step("gpu-paper (reduced)", [sys.executable, "-m", "robustft.cli", "bench", "--protocol", str(protocol),
                                 "--data-root", str(args.data_root), "--out", str(runs), "--report-dir",
                                 str(out / "gpu-paper")], {**env, "ROBUSTFT_PROGRESS_S": "30"}, log)
    perf_file = out / "perf" / "perf.json"
    perf = json.loads(perf_file.read_text()) if perf_file.exists() and log[1]["returncode"] == 0 else None
    summary = (tests.strip().splitlines() or [""])[-1]
    record = {"device": name, "size": size, "steps": log, "tests": summary,
              "wall_s": round(time.perf_counter() - start, 1), "provenance": provenance(0)}
    atomic_write_json(record, out / "gpu_check.json")
    lines = [f"# GPU check on {name}", "", f"`python bench/gpu_check.py {' '.join(sys.argv[1:])}` ({size} size), "
             f"{record['wall_s']:.0f} s in all; written by bench/gpu_check.py.", "",
             "| step | exit | wall s |", "|---|---|---|"]
    lines += [f"| {s['step']} | {s['returncode']} | {s['wall_s']:.0f} |" for s in log]
    lines += ["", f"Device tests: {summary}", "", "Throughput ([perf/perf.md](perf/perf.md)):",
              *(headline(perf) if perf else ["- perf.py failed; see its output"]), "",
              f"fp32 rows use PyTorch's defaults: cuDNN TF32 convolutions {torch.backends.cudnn.allow_tf32}, TF32 "
              f"matrix products {torch.backends.cuda.matmul.allow_tf32} (evaluation turns both off).", "",
              "Reduced gpu-paper protocol: [gpu-paper/results.md](gpu-paper/results.md) (a smoke run with fewer "
              "images, epochs and attack steps; its verdicts are not evidence).", ""]
    atomic_write(out / "README.md", lambda tmp: Path(tmp).write_text("\n".join(lines)))
    print("\n".join(lines))
    return int(any(s["returncode"] for s in log))


if __name__ == "__main__":
    sys.exit(main())
