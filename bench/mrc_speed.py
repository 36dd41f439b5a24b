"""MRC speed: the fast implementation (downstream subgraph only, BN folded, forward reused as evaluation) vs the
reference procedure (whole-model forward for every ascent step and every evaluation), side by side in one process.

Both run on the same adversarial examples (PGD-10 L∞ 8/255 step 2/255 of evenly spaced CIFAR-10 *training* images,
against the model) with the same ε, iterations, step and chunk size, on the shared adversarially trained ResNet-20.
The two alternate module by module (fast then reference for each module), so a change of machine load during the
run hits both alike; each module's time is its whole per-module cost (for the fast path: trace split, head pass,
ascent). Reports the summed wall and CPU time of each, the speed-up, and whether the two rank the modules the same
(identical ranking, Kendall τ, Spearman ρ, same lowest module, largest MRC difference).

Writes bench/results/mrc_speed.json. Usage: python bench/mrc_speed.py [--n 256] [--steps 10]
"""

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from scipy import stats

from robustft._io import atomic_write_json
from robustft.data import load_dataset
from robustft.eval.mrc import candidate_modules, mrc_examples, mrc_profile
from robustft.models import load_checkpoint
from robustft.runtime import provenance, seed_everything

SHARED = Path(os.environ.get("ROBUSTFT_SHARED", Path(__file__).resolve().parents[2] / "shared"))
RESULTS = Path(__file__).parent / "results" / "mrc_speed.json"
IMPLS = ("fast", "reference")


def compare(n: int = 256, steps: int = 10, batch_size: int = 512, seed: int = 0, device: str | torch.device = "cpu",
            log: Callable[[str], None] = print) -> dict[str, Any]:
    """Profile every module with both implementations, alternating; returns the comparison record."""
    seed_everything(seed)
    model = load_checkpoint("cifar_resnet20", SHARED / "models" / "cifar10_resnet20_linf_at.pt").eval().to(device)
    data = load_dataset(str(SHARED / "data" / "cifar10-jpeg" / "cifar10-jpeg.zip"), "train", device=device)
    x, y = mrc_examples(model, data, n, seed=seed)
    kw = dict(eps=0.1, steps=steps, lr=1.0, batch_size=batch_size)
    for impl in IMPLS:  # warm-up: allocator, fx trace code paths
        mrc_profile(model, x[:32], y[:32], modules=["layer2.0.conv1"], steps=1, impl=impl)
    names = candidate_modules(model, x[:1])
    results = {impl: {} for impl in IMPLS}
    wall = {impl: 0.0 for impl in IMPLS}
    cpu = {impl: 0.0 for impl in IMPLS}
    origin = None
    for name in names:
        for impl in IMPLS:
            c = time.process_time()
            prof = mrc_profile(model, x, y, modules=[name], impl=impl, **kw)
            cpu[impl] += time.process_time() - c
            (results[impl][name],) = prof.modules
            wall[impl] += results[impl][name].wall_s  # the module's own cost (not the shared unperturbed pass)
            origin = (prof.origin_loss, prof.origin_acc)
        log(f"{name:<24} fast {results['fast'][name].wall_s:6.1f} s  reference "
            f"{results['reference'][name].wall_s:6.1f} s  MRC {results['fast'][name].mrc:.4f} / "
            f"{results['reference'][name].mrc:.4f}")
    a, b = [results["fast"][n].mrc for n in names], [results["reference"][n].mrc for n in names]
    rank = {impl: sorted(names, key=lambda n, i=impl: results[i][n].mrc) for impl in IMPLS}
    diff = [abs(u - v) for u, v in zip(a, b, strict=True)]
    return {
        "what": f"MRC of every Conv2d/Linear module ({len(names)}) of the shared robust CIFAR-10 ResNet-20: fast vs "
                f"reference, alternating module by module",
        "model": "cifar10_resnet20_linf_at.pt",
        "examples": f"{len(y)} CIFAR-10 train images (evenly spaced), PGD-10 linf 8/255 step 2/255, random start",
        "eps": 0.1, "steps": steps, "lr": 1.0, "batch_size": batch_size,
        "wall_s": wall, "cpu_s": cpu,
        "speedup_wall": wall["reference"] / wall["fast"], "speedup_cpu": cpu["reference"] / cpu["fast"],
        "fallbacks": [n for n in names if results["fast"][n].impl != "fast"],
        "ranking_identical": rank["fast"] == rank["reference"],
        "kendall_tau": float(stats.kendalltau(a, b).statistic),
        "spearman_rho": float(stats.spearmanr(a, b).statistic),
        "lowest": {impl: rank[impl][0] for impl in IMPLS},
        "max_abs_mrc_diff": max(diff),
        "max_rel_mrc_diff": max(d / max(abs(v), 1e-12) for d, v in zip(diff, b, strict=True)),
        "origin": {"loss": origin[0], "acc": origin[1]},
        "modules": {n: {impl: {"mrc": results[impl][n].mrc, "wall_s": results[impl][n].wall_s} for impl in IMPLS}
                    for n in names},
        "ranking": rank["fast"],
        "torch_threads": torch.get_num_threads(), "load_average_at_end": os.getloadavg()}


def main() -> None:
    """Run the comparison and write the results file."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=256, help="training examples (PGD-10) MRC is measured on")
    parser.add_argument("--steps", type=int, default=10, help="gradient-ascent iterations per module")
    parser.add_argument("--batch-size", type=int, default=512, help="examples per forward (both implementations)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    start = time.perf_counter()
    record = compare(args.n, args.steps, args.batch_size, args.seed, log=lambda s: print(s, flush=True))
    record.update(command=f"python bench/mrc_speed.py --n {args.n} --steps {args.steps} --batch-size {args.batch_size} "
                          f"--seed {args.seed}", total_wall_s=time.perf_counter() - start,
                  provenance=provenance(args.seed))
    atomic_write_json(record, args.out)
    print(json.dumps({k: record[k] for k in ("wall_s", "cpu_s", "speedup_wall", "speedup_cpu", "ranking_identical",
                                             "kendall_tau", "lowest", "max_abs_mrc_diff", "fallbacks")}, indent=2))


if __name__ == "__main__":
    main()
