"""CPU transfer benchmark: the shared robust CIFAR-10 ResNet-20 fine-tuned to CIFAR-100, one suite of runs at a time.

Every run is `robustft finetune --config configs/cpu/cifar100_transfer.yaml --method M [--set ...]` (same data,
budget, seed, attack and validation-only selection rule), resumable: a finished run is reused. Within a suite each
method may have a small sweep; the variant reported for a method is the one with the best *validation* robust
accuracy, and only those are attacked with AutoAttack (class-balanced test subset) when the suite asks for it.
Results go to bench/results/transfer_<suite>/{results.md,results.json,clean_vs_robust.png}.

Usage: python bench/transfer.py SUITE [--shared ../shared] [--seed 0]
"""

import argparse
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robustft._io import atomic_write, atomic_write_json
from robustft.engine.protocol import slug
from robustft.report import (
    load_run,
    markdown_table,
    plot_clean_vs_robust,
    plot_norm_diagnostics,
    plot_training_curves,
    summary_row,
)
from robustft.runtime import provenance

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "configs/cpu/cifar100_transfer.yaml"


@dataclass(frozen=True)
class Run:
    """One fine-tuning of a suite. Runs of one ``group`` (default: the method) are variants of one method: only the
    one with the best validation robust accuracy is reported as that method's (and attacked with AutoAttack).
    ``{run:LABEL}`` in an override stands for the run directory of the suite's run LABEL."""

    method: str
    overrides: tuple[str, ...] = ()
    config: str = CONFIG
    group: str | None = None


# suite -> (runs {label: Run}, AutoAttack images per selected run (0: none))
SUITES: dict[str, tuple[dict[str, Run], int]] = {
    "baselines": ({"standard": Run("standard"), "pgd_at": Run("pgd_at")}, 0),
    "twins": ({
        "pgd_at": Run("pgd_at"),  # the same run as in the baselines suite (reused)
        "twins λ=1": Run("twins", ("method_args.lam=1.0",)),
        "twins λ=0.4": Run("twins", ("method_args.lam=0.4",)),
        "pgd_at lr=0.01": Run("pgd_at", ("optim.lr=0.01",)),
        "twins λ=1 lr=0.01": Run("twins", ("method_args.lam=1.0", "optim.lr=0.01")),
    }, 100),
}


def _beats(a: dict[str, Any], b: dict[str, Any], keys: tuple[str, ...]) -> bool:
    """Whether row ``a`` is higher than row ``b`` on every key present in both."""
    return all(a[k] > b[k] for k in keys if k in a and k in b)


# suite -> [(claim, check over the selected row of each group)]; the report states whether each held here
ROBUST = ("test_pgd20", "test_autoattack")
CLAIMS: dict[str, list[tuple[str, Callable[[dict[str, dict[str, Any]]], bool]]]] = {
    "baselines": [
        ("pgd_at is more robust (PGD-20) than standard", lambda g: _beats(g["pgd_at"], g["standard"], ROBUST)),
        ("standard is cleaner than pgd_at", lambda g: _beats(g["standard"], g["pgd_at"], ("test_clean",))),
    ],
    "twins": [
        ("TWINS beats pgd_at in clean accuracy (paper)", lambda g: _beats(g["twins"], g["pgd_at"], ("test_clean",))),
        ("TWINS beats pgd_at in robust accuracy, PGD-20 and AutoAttack (paper)",
         lambda g: _beats(g["twins"], g["pgd_at"], ROBUST)),
    ],
}


def _run_dir(label: str, args: argparse.Namespace) -> Path:
    """Where run ``label`` lives."""
    return args.runs / f"{slug(label)}-s{args.seed}"


def _finetune(label: str, spec: Run, args: argparse.Namespace) -> tuple[str, Path]:
    """Run (or reuse) one fine-tuning; returns its command line and run directory."""
    run_dir = _run_dir(label, args)
    overrides = [re.sub(r"\{run:([^}]*)\}", lambda m: str(_run_dir(m.group(1), args)), o) for o in spec.overrides]
    cmd = ["robustft", "finetune", "--config", spec.config, "--method", spec.method,
           "--data", str(args.shared / "data" / "cifar100"),
           "--checkpoint", str(args.shared / "models" / "cifar10_resnet20_linf_at.pt"),
           "--seed", str(args.seed), "--run-dir", str(run_dir), "--resume",
           *[a for o in overrides for a in ("--set", o)]]
    if not args.report_only:
        subprocess.run([sys.executable, "-m", "robustft.cli", *cmd[1:]], cwd=ROOT, check=True)
    return " ".join(cmd), run_dir


def _autoattack(run_dir: Path, n: int, args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """AutoAttack (standard) + PGD-20 of a run's exported model on n class-balanced test images (cached)."""
    out = run_dir / f"autoattack_n{n}.json"
    cmd = ["robustft", "evaluate", "--arch", "cifar_resnet20", "--checkpoint", str(run_dir / "model.pt"),
           "--data", str(args.shared / "data" / "cifar100"), "--split", "test", "--n", str(n), "--class-balanced",
           "--attack", "pgd", "--attack", "autoattack", "--steps", "20", "--eps", "8/255", "--seed", str(args.seed),
           "--json", str(out)]
    if not out.exists():
        subprocess.run([sys.executable, "-m", "robustft.cli", *cmd[1:]], cwd=ROOT, check=True)
    return " ".join(cmd), json.loads(out.read_text())


def main() -> None:
    """Run a suite and write its report."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("suite", choices=sorted(SUITES))
    parser.add_argument("--shared", type=Path, default=Path(os.environ.get("ROBUSTFT_SHARED", ROOT.parent / "shared")))
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "bench_transfer")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--report-only", action="store_true", help="rewrite the report from finished runs only")
    args = parser.parse_args()
    runs, aa_n = SUITES[args.suite]
    out = ROOT / "bench" / "results" / f"transfer_{args.suite}"
    start = time.perf_counter()
    commands, rows = [], []
    for label, spec in runs.items():
        cmd, run_dir = _finetune(label, spec, args)
        commands.append(cmd)
        rows.append({**summary_row(load_run(run_dir), label=label), "group": spec.group or spec.method,
                     "run_dir": str(run_dir)})
    # per method, the variant with the best validation robust accuracy (never a test number)
    selected = {}
    for row in rows:
        best = selected.get(row["group"])
        if best is None or row["val_robust"] > best["val_robust"]:
            selected[row["group"]] = row
    for row in rows:
        row["selected"] = row is selected[row["group"]]
        if aa_n and row["selected"]:
            cmd, aa = _autoattack(Path(row["run_dir"]), aa_n, args)
            commands.append(cmd)
            # the AutoAttack subset's own clean and PGD-20 numbers, so AA compares with PGD on the same images
            row.update(test_aa_subset_clean=aa["clean_acc"], test_aa_subset_pgd20=aa["robust_acc"]["pgd20"],
                       test_autoattack=aa["robust_acc"]["autoattack"], n_autoattack=aa["n"])
    out.mkdir(parents=True, exist_ok=True)
    robust_key = next(k for k in rows[0] if k.startswith("test_pgd"))
    chosen = [r for r in rows if r["selected"]]
    plot_clean_vs_robust(chosen, out / "clean_vs_robust.png", robust_key,
                         title=f"ResNet-20 robust CIFAR-10 → CIFAR-100: {args.suite} (test)")
    histories = {r["run"]: load_run(r["run_dir"])["history"]["main"] for r in rows}
    plot_training_curves(histories, out / "training_curves.png")
    if all("conv_weight_norm" in h[0] for h in histories.values()):
        plot_norm_diagnostics(histories, out / "norm_diagnostics.png")
    claims = {claim: bool(check(selected)) for claim, check in CLAIMS.get(args.suite, [])}
    record = {"suite": args.suite, "rows": rows, "claims": claims, "commands": commands,
              "wall_s": time.perf_counter() - start, "provenance": provenance(args.seed)}
    atomic_write_json(record, out / "results.json")
    table_rows = [{k: v for k, v in r.items() if k not in ("run_dir", "method", "group")} for r in rows]
    text = (f"# Transfer suite `{args.suite}`: robust CIFAR-10 ResNet-20 → CIFAR-100 (CPU)\n\n"
            f"Generated by `python bench/transfer.py {args.suite}`. Accuracies in %; test = {rows[0]['n_test']} "
            "CIFAR-100 test images; epoch selection on validation (`eval.select: auto`: clean accuracy for a clean "
            "objective, robust accuracy otherwise), variant selection on validation robust accuracy; never test"
            + (f"; AutoAttack (standard, Linf 8/255) on {aa_n} class-balanced test images for the selected "
               "variant of each method" if aa_n else "") + ".\n\n" + markdown_table(table_rows)
            + "".join(f"\n- {claim}: **{'held' if held else 'did not hold'}** here" for claim, held in claims.items())
            + "\n\nCommands:\n\n```bash\n" + "\n".join(commands) + "\n```\n"
            + f"\nMachine: {record['provenance']['platform']}, {record['provenance']['cpu_count']} CPUs, torch "
              f"{record['provenance']['torch']}, seed {args.seed}; wall time of this invocation "
              f"{record['wall_s']:.0f} s (finished runs are reused).\n")
    atomic_write(out / "results.md", lambda tmp: Path(tmp).write_text(text))
    print(text)


if __name__ == "__main__":
    main()
