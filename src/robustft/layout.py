"""The run directory's layout, owned in one place: every reader and writer of run files asks ``RunLayout`` for paths.

```
<run>/config.yaml    the resolved config          <run>/results.json  test results, stages, provenance
      .lock          held by the running process        test_samples.json  per-test-image correctness
      model.pt / model.json  the exported model and its card
      metrics.jsonl  one line per epoch                 last.pt / best.pt      training state / selected weights
      tensorboard/   per-step and per-epoch scalars as TensorBoard events (train.report_to)
      wandb.json     the W&B run's id and last logged step (train.report_to: [wandb])
      stage<i>_<name>/  the same per-stage files for a multi-stage method (metrics, last, best)
      <artifact>.json / .png / .txt  what a method writes besides (e.g. RiFT's mrc.*, alpha_curve.*)
```
"""

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UserError

__all__ = ["RunLayout", "resolve_weights"]

MAX_RESULTS_BYTES = 256 << 20  # a results.json is kB to a few MB (per-image flags are in test_samples.json)


def _file(name: str, doc: str) -> property:
    """A read-only attribute: the path of ``name`` inside the layout's root."""
    return property(lambda self: self.root / name, doc=doc)


@dataclass(frozen=True)
class RunLayout:
    """Paths inside one run directory (or one stage's directory: the per-stage files have the same names)."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    config = _file("config.yaml", "The resolved run config; its presence marks a started run.")
    lock = _file(".lock", "The lock file the running process holds.")
    results = _file("results.json", "Test results: written last, so its presence marks a finished run.")
    samples = _file("test_samples.json", "Per-test-image correctness (clean, each attack) for paired comparisons.")
    model = _file("model.pt", "The exported plain state dict.")
    card = _file("model.json", "The exported model's card.")
    metrics = _file("metrics.jsonl", "One JSON line per finished epoch (of this stage).")
    tensorboard = _file("tensorboard", "TensorBoard event files of the training scalars (train.report_to).")
    wandb = _file("wandb.json", "The W&B run id and the last step logged to it (train.report_to).")
    last = _file("last.pt", "The full training state after the last finished epoch (of this stage).")
    best = _file("best.pt", "The weights of the selected (best validation) epoch (of this stage).")

    def read_results(self) -> dict[str, Any]:
        """``results.json``, read back; a missing, damaged or truncated one is one line saying what to do."""
        if not self.results.is_file():
            raise UserError(f"{self.root} has no {self.results.name}: it is not a finished robustft run")
        return self.read_json(self.results)

    def read_json(self, path: Path) -> dict[str, Any]:
        """A JSON object this run wrote (``results.json``, ``test_samples.json``); a damaged one is one line."""
        hint = (f"delete {self.results.name} and {self.samples.name} and run the same command with --resume to "
                f"test the selected model again")
        try:
            with open(path, "rb") as f:
                text = f.read(MAX_RESULTS_BYTES + 1)
            if len(text) > MAX_RESULTS_BYTES:
                raise ValueError(f"larger than {MAX_RESULTS_BYTES >> 20} MB")
            record = json.loads(text)
        except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise UserError(f"{path} is damaged ({str(e).splitlines()[0]}); {hint}") from None
        if not isinstance(record, dict):
            raise UserError(f"{path} is damaged (a JSON {type(record).__name__}, not an object); {hint}")
        return record

    def artifact(self, stem: str, suffix: str = ".json") -> Path:
        """A method's own output, e.g. ``artifact("mrc", ".png")``."""
        return self.root / f"{stem}{suffix}"

    def stage(self, index: int, name: str, count: int) -> "RunLayout":
        """The layout of stage ``index`` (0-based) of ``count``: the run directory itself for a one-stage method."""
        return self if count == 1 else RunLayout(self.root / f"stage{index + 1}_{name}")

    def stage_names(self) -> list[str]:
        """The stages this run directory holds, in order (empty for a one-stage run)."""
        dirs = sorted((p for p in self.root.glob("stage*_*") if p.is_dir()),
                      key=lambda p: int(p.name[5:].partition("_")[0] or 0))
        return [p.name.partition("_")[2] for p in dirs]

    def written_dirs(self) -> list[Path]:
        """The directories robustft writes files into: the run directory and its stages' directories."""
        return [self.root, *(self.root / f"stage{i + 1}_{n}" for i, n in enumerate(self.stage_names()))]

    def check_owned(self) -> None:
        """Refuse a directory that holds files but is not a robustft run directory (no config.yaml, no .lock): a run
        there would overwrite and clean up what is not its own."""
        if not self.root.is_dir() or self.config.exists() or self.lock.exists():
            return
        if next(self.root.iterdir(), None) is not None:
            raise UserError(f"{self.root} is not empty and not a robustft run directory (no {self.config.name}): a run "
                            f"there would overwrite its files; give a new or empty directory (--run-dir, or "
                            f"train.out_dir / train.name)")

    def started(self) -> bool:
        """Whether the directory holds work to protect: a finished epoch of any stage, or final results."""
        return self.results.exists() or any((d / self.last.name).exists() for d in self.written_dirs())

    def claim(self, resume: bool, same_config: Callable[[Path], bool], log: Callable[[str], None]) -> bool:
        """Whether the directory holds a run to continue (read-only; ``same_config(path)``: whether the config saved
        there is the run's). Refuses to clobber a started run without ``resume`` and to resume one with another
        config; a config without a finished epoch is not a run to protect."""
        self.check_owned()
        if not self.config.exists():
            return False
        if not self.started():
            log(f"{self.root} holds a config but no finished epoch (an earlier start failed or stopped early): "
                f"starting it anew")
            return False
        if not resume:
            raise UserError(f"run directory {self.root} already holds a run: pass --resume to continue it, or choose "
                            f"another train.name / train.out_dir")
        if not same_config(self.config):
            raise UserError(f"cannot resume {self.root}: the config differs from the one it was started with "
                            f"({self.config}); start a new run instead")
        return True

    def stage_named(self, name: str) -> "RunLayout":
        """The layout of the stage called ``name``."""
        names = self.stage_names()
        if name not in names:
            raise UserError(f"{self.root} has no stage {name!r} (its stages: {', '.join(names) or 'none'})")
        return self.stage(names.index(name), name, len(names))


def resolve_weights(spec: str) -> Path:
    """The weights file named by ``spec``: a checkpoint file; ``RUN_DIR`` (a finished run's exported model); or
    ``RUN_DIR:STAGE`` (the selected weights of one stage of a finished run, e.g. ``runs/roli:lp``)."""
    path = Path(spec)
    if path.is_file():
        return path
    run_dir, sep, stage = spec.rpartition(":")
    layout = RunLayout(Path(run_dir) if sep and Path(run_dir).is_dir() else path)
    if not layout.root.is_dir():
        raise UserError(f"{spec} is neither a checkpoint file nor a run directory (RUN_DIR or RUN_DIR:STAGE)")
    if not layout.results.is_file():
        raise UserError(f"{layout.root} is not a finished run (no {layout.results.name}); finish it first")
    if sep and layout.root != path:
        return layout.stage_named(stage).best
    return layout.model
