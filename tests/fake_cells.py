"""Fake protocol cells for the runner's decisions (bracketing grids, more seeds): ``run`` writes nothing but the
files a finished run has, ``load_run`` returns results whose validation score is ``score(method, lr, seed)`` and whose
test flags are ``flags(method, lr, seed)`` (default: the first ``score`` × N_TEST images right)."""

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import robustft.bench.runner as runner

N_TEST = 200


Score = Callable[[str, float, int], float]


def install(monkeypatch, score: Score, flags: Callable[[str, float, int], str] | None = None) -> list[tuple]:
    """Patch the runner's ``run`` and ``load_run``; returns the (lr, seed, method) of every cell run, in order."""
    ran: list[tuple] = []

    def run(cfg: Any, run_dir: Path, resume: bool, log: Callable[[str], None]) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "metrics.jsonl").write_text("")
        (run_dir / "results.json").write_text(json.dumps({"lr": cfg.optim.lr, "seed": cfg.train.seed,
                                                          "method": cfg.method}))
        ran.append((cfg.optim.lr, cfg.train.seed, cfg.method))

    def load_run(run_dir: Path) -> dict[str, Any]:
        r = json.loads((Path(run_dir) / "results.json").read_text())
        key = (r["method"], r["lr"], r["seed"])
        val = score(*key)
        f = flags(*key) if flags else "".join("1" if i < val * N_TEST else "0" for i in range(N_TEST))
        acc = f.count("1") / N_TEST
        return {"method": r["method"], "wall_s": 1.0, "provenance": {"time_utc": "2026-01-01T00:00:00"},
                "stages": {"train": {"run_dir": str(run_dir), "best_epoch": 1,
                                     "best_val": {"val_clean_acc": val, "val_robust_acc": val}}},
                "test": {"clean_acc": acc, "robust_acc": {"pgd20": acc}, "n": N_TEST,
                         "class_mean_acc": {"clean": acc / 2, "pgd20": acc / 4}},
                "samples": {"test": {"clean": f, "pgd20": f}}, "history": {"train": []}}

    monkeypatch.setattr(runner, "run", run)
    monkeypatch.setattr(runner, "load_run", load_run)
    return ran


def peak_at(best: float) -> Score:
    """A validation score that falls with the log-distance of lr from ``best`` (the same for every method and
    seed)."""
    return lambda method, lr, seed: 0.9 - 0.1 * abs(math.log(lr / best))
