"""The README's main job: fine-tune the bundled robust source model on the bundled demo task with ``standard`` and
``pgd_at``, evaluate clean + PGD on test, print a comparison table and write a PNG plot.

Everything it needs ships inside the package (src/robustft/assets/): no network, no external data.
"""

from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from ._io import atomic_write
from .engine import load_config, run
from .report import load_run, markdown_table, plot_clean_vs_robust, plot_training_curves, result_row

__all__ = ["run_demo", "DEMO_METHODS", "asset"]

DEMO_METHODS = ("standard", "pgd_at")


def asset(name: str) -> Path:
    """Path of a file bundled in robustft/assets."""
    return Path(str(resources.files("robustft") / "assets" / name))


def run_demo(out_dir: str | Path = "runs/demo", *, overrides: list[str] | None = None,
             log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Run (or resume) both fine-tunings into ``out_dir``; returns the table rows."""
    out_dir = Path(out_dir)
    rows = []
    for method in DEMO_METHODS:
        cfg = load_config(asset("demo.yaml"), [f"method={method}", f"data.name={asset('demo_cifar10_dog-truck.zip')}",
                                               f"model.checkpoint={asset('demo_source_resnet20.pt')}",
                                               f"train.out_dir={out_dir}", f"train.name={method}",
                                               *(overrides or [])])
        log(f"== {method} ==")
        run(cfg, resume=True, log=log)
        rows.append(result_row(load_run(out_dir / method)))
    table = markdown_table(rows)
    atomic_write(out_dir / "comparison.md", lambda tmp: Path(tmp).write_text(table))
    plot_clean_vs_robust(rows, out_dir / "comparison.png", title="demo: robust source → dog..truck (test)")
    plot_training_curves({m: load_run(out_dir / m)["history"]["main"] for m in DEMO_METHODS},
                         out_dir / "training_curves.png", {row["label"]: row["best_epoch"] for row in rows})
    log("\n" + table)
    log(f"wrote {out_dir / 'comparison.md'}, {out_dir / 'comparison.png'}, {out_dir / 'training_curves.png'}")
    return rows
