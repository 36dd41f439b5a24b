"""Fake protocol cells for the runner's decisions (bracketing grids, more seeds): ``run`` writes nothing but the
files a finished run has, ``load_run`` returns results whose validation score is ``score(lr, seed)``."""

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import robustft.bench.runner as runner

N_TEST = 200


def install(monkeypatch, score: Callable[[float, int], float],
            flags: Callable[[float, int], str] | None = None) -> list[tuple[float, int]]:
    """Patch the runner's ``run`` and ``load_run``; returns the (lr, seed) of every cell run, in order."""
    ran: list[tuple[float, int]] = []

    def run(cfg: Any, run_dir: Path, resume: bool, log: Callable[[str], None]) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "metrics.jsonl").write_text("")
        (run_dir / "results.json").write_text(json.dumps({"lr": cfg.optim.lr, "seed": cfg.train.seed,
                                                          "method": cfg.method}))
        ran.append((cfg.optim.lr, cfg.train.seed))

    def load_run(run_dir: Path) -> dict[str, Any]:
        r = json.loads((Path(run_dir) / "results.json").read_text())
        val = score(r["lr"], r["seed"])
        f = flags(r["lr"], r["seed"]) if flags else "".join("1" if i < val * N_TEST else "0" for i in range(N_TEST))
        acc = f.count("1") / N_TEST
        return {"method": r["method"], "wall_s": 1.0, "provenance": {"time_utc": "2026-01-01T00:00:00"},
                "stages": {"train": {"run_dir": str(run_dir), "best_epoch": 1,
                                     "best_val": {"val_clean_acc": val, "val_robust_acc": val}}},
                "test": {"clean_acc": acc, "robust_acc": {"pgd20": acc}, "n": N_TEST},
                "samples": {"test": {"clean": f, "pgd20": f}}, "history": {"train": []}}

    monkeypatch.setattr(runner, "run", run)
    monkeypatch.setattr(runner, "load_run", load_run)
    return ran


def peak_at(best: float) -> Callable[[float, int], float]:
    """A validation score that falls with the log-distance of lr from ``best`` (the same for every seed)."""
    return lambda lr, seed: 0.9 - 0.1 * abs(math.log(lr / best))
