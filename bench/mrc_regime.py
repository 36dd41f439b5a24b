"""RiFT's MRC under its two ascent regimes, on the shared robust model: does the module ranking, and the module RiFT
fine-tunes (the lowest MRC), change?

- full batch (robustft's default): each of the 10 iterations is one gradient step of lr 1 on the mean loss over all
  examples, then the projection onto ‖Δw‖ ≤ 0.1‖w‖;
- official (``mrc_minibatch: 512``): each iteration is a shuffled pass of SGD steps of lr 1 over mini-batches of 512
  (n/512 steps), then the projection — the official ``layer_sharpness``.
Both on the same examples: PGD-10 L∞ 8/255 step 2/255 of --n evenly spaced CIFAR-10 *training* images (the official
attacks 10 000 test images; robustft never uses test data for a choice). The two coincide when n ≤ 512.

Writes bench/results/mrc_regime.json and .md. Usage: python bench/mrc_regime.py [--n 2048] [--minibatch 512]
"""

import argparse
import os
import time
from pathlib import Path
from typing import Any

import torch
from scipy import stats

from robustft._io import atomic_write, atomic_write_json
from robustft.data import load_dataset
from robustft.eval.mrc import mrc_examples, mrc_profile
from robustft.models import load_checkpoint
from robustft.runtime import provenance, seed_everything

SHARED = Path(os.environ.get("ROBUSTFT_SHARED", Path(__file__).resolve().parents[2] / "shared"))
RESULTS = Path(__file__).parent / "results"


def compare(n: int, minibatch: int, seed: int = 0) -> dict[str, Any]:
    """Both regimes' profiles on the same examples, and how their rankings agree."""
    seed_everything(seed)
    model = load_checkpoint("cifar_resnet20", SHARED / "models" / "cifar10_resnet20_linf_at.pt").eval()
    data = load_dataset(str(SHARED / "data" / "cifar10-jpeg" / "cifar10-jpeg.zip"), "train")
    x, y = mrc_examples(model, data, n, seed=seed)
    regimes = {"full_batch": None, "official": minibatch}
    profiles = {}
    for label, mb in regimes.items():
        profiles[label] = mrc_profile(model, x, y, eps=0.1, steps=10, lr=1.0, minibatch=mb, seed=seed,
                                      log=lambda s, lab=label: print(f"{lab}: {s}", flush=True))
    names = [m.name for m in profiles["full_batch"].modules]
    a, b = ([p.scores[m] for m in names] for p in profiles.values())
    return {
        "n": len(y), "minibatch": minibatch, "steps_per_projection": -(-len(y) // minibatch),
        "examples": f"{len(y)} CIFAR-10 train images (evenly spaced), PGD-10 linf 8/255 step 2/255, random start",
        "origin": {"loss": profiles["full_batch"].origin_loss, "acc": profiles["full_batch"].origin_acc},
        "lowest": {k: p.lowest() for k, p in profiles.items()},
        "same_lowest": profiles["full_batch"].lowest() == profiles["official"].lowest(),
        "ranking": {k: p.ranking() for k, p in profiles.items()},
        "ranking_identical": profiles["full_batch"].ranking() == profiles["official"].ranking(),
        "kendall_tau": float(stats.kendalltau(a, b).statistic),
        "spearman_rho": float(stats.spearmanr(a, b).statistic),
        "mrc": {m: {"full_batch": u, "official": v} for m, u, v in zip(names, a, b, strict=True)},
        "wall_s": {k: p.wall_s for k, p in profiles.items()}, "torch_threads": torch.get_num_threads()}


def markdown(r: dict[str, Any]) -> str:
    """The human-readable report."""
    lines = ["# RiFT MRC: full-batch vs the official mini-batch regime", "",
             f"Shared robust CIFAR-10 ResNet-20, {r['examples']}; ε 0.1, 10 iterations, lr 1. Full batch: one step "
             f"per projection; official: {r['steps_per_projection']} SGD steps (mini-batches of {r['minibatch']}) "
             "per projection. "
             f"Unperturbed robust loss {r['origin']['loss']:.4f}, accuracy {100 * r['origin']['acc']:.1f}%.", "",
             f"Lowest MRC (the module RiFT fine-tunes): full batch `{r['lowest']['full_batch']}`, official "
             f"`{r['lowest']['official']}` — {'the same' if r['same_lowest'] else 'different'}. Ranking identical: "
             f"{'yes' if r['ranking_identical'] else 'no'}; Kendall τ {r['kendall_tau']:.3f}, Spearman ρ "
             f"{r['spearman_rho']:.3f}. Wall time: full batch {r['wall_s']['full_batch']:.0f} s, official "
             f"{r['wall_s']['official']:.0f} s.", "",
             "| module | MRC full batch | rank | MRC official | rank |", "|---|---|---|---|---|"]
    rank = {k: {m: i + 1 for i, m in enumerate(v)} for k, v in r["ranking"].items()}
    for m, v in r["mrc"].items():
        lines.append(f"| {m} | {v['full_batch']:.4f} | {rank['full_batch'][m]} | {v['official']:.4f} | "
                     f"{rank['official'][m]} |")
    p = r["provenance"]
    lines += ["", f"Command: `{r['command']}`  ", f"Wall time: {r['total_wall_s']:.0f} s  ",
              f"Machine: {p['platform']}, {p['cpu_count']} CPUs, {r['torch_threads']} torch threads; torch "
              f"{p['torch']}, robustft {p['robustft']} ({p['git_sha']}), {p['time_utc']}", ""]
    return "\n".join(lines)


def main() -> None:
    """Run both regimes and write the results."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2048, help="training examples (PGD-10) MRC is measured on")
    parser.add_argument("--minibatch", type=int, default=512, help="the official regime's mini-batch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args()
    start = time.perf_counter()
    record = compare(args.n, args.minibatch, args.seed)
    record.update(command=f"python bench/mrc_regime.py --n {args.n} --minibatch {args.minibatch} --seed {args.seed}",
                  total_wall_s=time.perf_counter() - start, provenance=provenance(args.seed))
    atomic_write_json(record, args.out_dir / "mrc_regime.json")
    atomic_write(args.out_dir / "mrc_regime.md", lambda tmp: Path(tmp).write_text(markdown(record)))
    print(markdown(record))


if __name__ == "__main__":
    main()
