"""A whole run from a config: load data and the source model, train each stage, export, test once at the end."""

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from .._io import atomic_write, atomic_write_json
from ..attacks import PGD, create_attack, parse_eps
from ..data import ArrayDataset, load_dataset
from ..errors import UserError
from ..eval import balanced_subset, evaluate
from ..methods import RunContext, Stage, create_method
from ..methods.roli import stage1_checkpoint
from ..models import (
    create_model,
    load_classifier,
    load_model,
    load_state_dict_into,
    read_state_dict,
    replace_head,
    save_state_dict,
    set_normalization,
)
from ..runtime import provenance, seed_everything
from .config import RunConfig, apply_overrides, from_dict, to_dict
from .distributed import DistInfo, barrier, cleanup, init_distributed
from .train import BEST, fit

__all__ = ["run", "default_run_dir", "build_source_model", "export_model", "load_exported_model"]

RESULTS, CONFIG, MODEL, CARD = "results.json", "config.yaml", "model.pt", "model.json"


def default_run_dir(cfg: RunConfig) -> Path:
    """``<out_dir>/<name>``, the name defaulting to method-dataset-seed."""
    stem = Path(cfg.data.name.rstrip("/")).name.split(".")[0] or "data"
    return Path(cfg.train.out_dir) / (cfg.train.name or f"{cfg.method}-{stem}-s{cfg.train.seed}")


def build_source_model(cfg: RunConfig, num_classes: int) -> nn.Module:
    """The source model with a head for ``num_classes`` (kept, or replaced as ``model.head`` says).

    Sources: ``model.checkpoint`` (a file), else published weights named by a tagged arch such as
    ``resnet50.madry_linf4_in1k`` (downloaded once), else random init (robust pre-training from scratch).
    """
    m = cfg.model
    if m.checkpoint is not None:
        model = load_model(m.arch, m.checkpoint, normalization=m.normalization, **m.options)
    elif "." in m.arch:
        model = create_model(m.arch, normalization=m.normalization, pretrained=True, **m.options)
    else:
        return load_model(m.arch, None, num_classes=num_classes, normalization=m.normalization, **m.options)
    source_classes = model.get_classifier().out_features
    if m.head == "keep" and source_classes != num_classes:
        raise UserError(f"model.head=keep but the source model has {source_classes} classes and the data "
                        f"{num_classes}; use model.head=auto or new")
    if m.head == "new" or source_classes != num_classes:
        model = replace_head(model, num_classes)
    if m.init_head:
        load_head(model, m.init_head)
    return model


def load_head(model: nn.Module, source: str) -> None:
    """Copy a classifier from a checkpoint, or from ``roli:RUN_DIR`` (the best stage-1 head of a RoLI/LP-FT run)."""
    path = Path(source)
    if source.startswith("roli:"):
        path = stage1_checkpoint(source.removeprefix("roli:"))
        if not path.is_file():
            raise UserError(f"{source}: {path} does not exist (expected a finished RoLI, LP-FT or "
                            f"adv_linear_probe run directory)")
    load_classifier(model, path)


def _stage_config(cfg: RunConfig, stage: Stage) -> RunConfig:
    """The run config with a stage's overrides applied."""
    if not stage.overrides:
        return cfg
    return from_dict(RunConfig, apply_overrides(to_dict(cfg), [f"{k}={json.dumps(v)}" for k, v in
                                                               stage.overrides.items()]))


def export_model(model: nn.Module, cfg: RunConfig, classes: list[str], run_dir: Path,
                 metrics: dict[str, Any]) -> None:
    """Plain ``state_dict`` (loads without robustft) plus a JSON card like the shared reference model's."""
    save_state_dict(model, run_dir / MODEL)
    sd = model.state_dict()
    card = {"arch": cfg.model.arch, "num_classes": len(classes), "classes": classes,
            "input": "float RGB in [0,1], NCHW; normalization inside the model (normalize.mean / normalize.std)",
            "normalize": {k: sd[f"normalize.{k}"].flatten().tolist() for k in ("mean", "std")},
            "source_checkpoint": cfg.model.checkpoint, "method": cfg.method, "recipe": to_dict(cfg),
            "metrics": metrics, "format": "torch.save of a plain state_dict (loads with torch.load(weights_only=True))",
            "state_dict_keys": {k: list(v.shape) for k, v in sd.items()}}
    atomic_write_json(card, run_dir / CARD)


def load_exported_model(arch: str, checkpoint: str | Path | None, *, num_classes: int | None = None,
                        normalization: str | None = None) -> nn.Module:
    """Load a checkpoint for evaluation. A robustft export (``model.json`` card beside it) is rebuilt with its run's
    architecture options and its method's export structure (e.g. RoLI adapters); anything else via ``load_model``."""
    card_path = Path(checkpoint).with_suffix(".json") if checkpoint else None
    if card_path is None or not card_path.is_file():
        return load_model(arch, checkpoint, num_classes=num_classes, normalization=normalization)
    card = json.loads(card_path.read_text())
    recipe = card.get("recipe", {})
    if card.get("arch", arch) != arch:
        raise UserError(f"{checkpoint} was exported for --arch {card['arch']}, not {arch}")
    model = create_model(arch, num_classes or card["num_classes"], **recipe.get("model", {}).get("options", {}))
    method = create_method(card["method"], PGD(), **recipe.get("method_args", {}))
    load_state_dict_into(method.export_architecture(model), read_state_dict(checkpoint))
    if normalization is not None:
        set_normalization(model, normalization)
    return model


def _load(cfg: RunConfig, split: str, n: int | None, device: torch.device) -> ArrayDataset:
    """One split of the configured dataset on ``device``."""
    d = cfg.data
    return load_dataset(d.name, split, root=d.root, n=n, val_fraction=d.val_fraction, split_seed=d.split_seed,
                        image_size=d.image_size, device=device)


def _test(model: nn.Module, cfg: RunConfig, eps: float, device: torch.device) -> dict[str, Any]:
    """Clean/PGD (and optional AutoAttack on a class-balanced subset, optional common corruptions) on the test
    split — the only test use. With ``eval.test_source`` the source model, rebuilt from its checkpoint, gets the same
    evaluation under ``test_source``: before/after in one record, each model tested once."""
    from ..eval import evaluate_corruptions

    test = _load(cfg, "test", cfg.data.test_n, device)
    options = dict(eps=eps, norm=cfg.attack.norm, steps=cfg.eval.test_steps, seed=cfg.train.seed)
    attacks = [create_attack(a, **options) for a in cfg.eval.test_attacks if a != "autoattack"]
    batch, cl, seed = cfg.data.eval_batch_size, cfg.train.channels_last, cfg.train.seed

    def measure(m: nn.Module) -> dict[str, Any]:
        out = {"test": evaluate(m, test, attacks, batch_size=batch, seed=seed, channels_last=cl).to_dict()}
        if "autoattack" in cfg.eval.test_attacks:
            subset = balanced_subset(test, cfg.eval.autoattack_n or len(test))
            out["test_autoattack"] = evaluate(m, subset, [create_attack("autoattack", **options)], batch_size=batch,
                                              seed=seed, channels_last=cl).to_dict()
        if cfg.eval.corruptions:
            out["test_corruptions"] = evaluate_corruptions(
                m, test, cfg.eval.corruptions, cfg.eval.corruption_severities, seed=seed, batch_size=batch,
                channels_last=cl, corruption_dir=cfg.eval.corruption_dir, n=cfg.eval.corruption_n).to_dict()
        return out

    out = measure(model)
    if cfg.eval.test_source:
        source = build_source_model(cfg, test.num_classes).to(device)
        out["test_source"] = measure(source.to(memory_format=torch.channels_last) if cl else source)
    return out


def run(cfg: RunConfig, *, run_dir: Path | None = None, resume: bool = False,
        log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train, select on validation, export and test; returns (and writes) ``results.json``."""
    info = init_distributed(cfg.train.device)
    try:
        return _run(cfg, run_dir or default_run_dir(cfg), resume, info, log if info.is_main else (lambda s: None))
    finally:
        cleanup(info)


def _prepare_run_dir(cfg: RunConfig, run_dir: Path, resume: bool, info: DistInfo) -> None:
    """Refuse to clobber an earlier run; on resume, refuse a changed config."""
    saved = run_dir / CONFIG
    existed = saved.exists()
    barrier(info)  # every rank has looked before rank 0 writes (else a slow rank would find the new run and refuse)
    if existed:
        if not resume:
            raise UserError(f"run directory {run_dir} already holds a run: pass --resume to continue it, or choose "
                            f"another train.name / train.out_dir")
        if yaml.safe_load(saved.read_text()) != yaml.safe_load(yaml.safe_dump(to_dict(cfg))):
            raise UserError(f"cannot resume {run_dir}: the config differs from the one it was started with "
                            f"({saved}); start a new run instead")
    elif info.is_main:
        atomic_write(saved, lambda tmp: Path(tmp).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False)))
    barrier(info)


def _run(cfg: RunConfig, run_dir: Path, resume: bool, info: DistInfo, log: Callable[[str], None]) -> dict[str, Any]:
    """The body of ``run`` inside the process group."""
    _prepare_run_dir(cfg, run_dir, resume, info)
    if (run_dir / RESULTS).exists():
        log(f"{run_dir} is already complete")
        return json.loads((run_dir / RESULTS).read_text())
    start = time.perf_counter()
    seed_everything(cfg.train.seed)
    device = info.device
    train, val = _load(cfg, "train", cfg.data.train_n, device), _load(cfg, "val", cfg.data.val_n, device)
    log(f"data: {len(train)} train / {len(val)} val images, {train.num_classes} classes")
    model = build_source_model(cfg, train.num_classes).to(device)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    eps = parse_eps(cfg.attack.eps)
    attack = PGD(eps=eps, norm=cfg.attack.norm, steps=cfg.attack.steps,
                 step_size=parse_eps(cfg.attack.step_size) if cfg.attack.step_size else None, name="pgd_train")
    method = create_method(cfg.method, attack, **cfg.method_args)
    ctx = RunContext(train=train, val=val, cfg=cfg, run_dir=run_dir, device=device, is_main=info.is_main, log=log,
                     source_state={k: v.detach().clone() for k, v in model.state_dict().items()})
    method.setup(model, ctx)
    stages = method.stages()
    results: dict[str, Any] = {"method": cfg.method, "run_dir": str(run_dir), "stages": {}}
    resumed_s = 0.0  # epochs finished by an earlier, interrupted invocation count towards the run's wall time
    for i, stage in enumerate(stages):
        stage_dir = run_dir if len(stages) == 1 else run_dir / f"stage{i + 1}_{stage.name}"
        stage_cfg = _stage_config(cfg, stage)
        model = stage.method.prepare(model)
        log(f"stage {stage.name}: {sum(p.numel() for _, p in stage.method.trainable_parameters(model)):,} "
            f"trainable parameters, {stage_cfg.train.epochs} epochs")
        result = fit(stage.method, model, train, val, stage_cfg, stage_dir, info, resume=resume, log=log)
        model.load_state_dict(torch.load(stage_dir / BEST, map_location=device, weights_only=True))
        results["stages"][stage.name] = {"best_epoch": result.best_epoch, "best_val": result.best,
                                         "run_dir": str(stage_dir)}
        resumed_s += result.resumed_s
    model = method.finalize(model, ctx)
    if info.is_main:
        results.update(method.results())
        results.update(_test(model, cfg, eps, device))
        results["wall_s"] = time.perf_counter() - start + resumed_s
        results["provenance"] = provenance(cfg.train.seed)
        final_val = results["stages"][stages[-1].name]["best_val"]
        export_model(model, cfg, train.classes, run_dir, {"val": final_val, "test": results["test"]})
        atomic_write_json(results, run_dir / RESULTS)
        t = results["test"]
        log(f"test: clean {t['clean_acc']:.4f}  " + "  ".join(f"{k} {v:.4f}" for k, v in t["robust_acc"].items()))
    barrier(info)
    return results
