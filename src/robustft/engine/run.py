"""A whole run from a config: load data and the source model, train each stage, export, test once at the end."""

import contextlib
import copy
import dataclasses
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from .._io import atomic_write, atomic_write_json, check_writable, locked, remove_stale_temporaries
from .._yaml import read_yaml
from ..attacks import PGD, create_attack
from ..card import load_exported_model, read_card, write_card
from ..data import ArrayDataset, PackedDataset, load_splits, open_source
from ..data.dataset import check_training_classes
from ..errors import UserError, warn
from ..eval import evaluate, num_outputs, subset_autoattack
from ..layout import RunLayout, resolve_weights
from ..methods import Method, RunContext, Stage, check_structure, create_method
from ..models import ImageClassifier, create_model, load_checkpoint, load_classifier, read_state_dict, save_state_dict
from ..runtime import provenance, seed_everything
from ..schema import format_value
from .config import RunConfig, from_dict, to_dict, with_keys
from .distributed import DistInfo, all_reduce_sum, barrier, cleanup, init_distributed
from .optim import resolve_lr
from .precision import run_precision
from .state import load_best_weights, saved_method_state
from .train import fit

__all__ = ["run", "default_run_dir", "build_source_model", "source_config", "export_model", "load_run_model"]

MIN_USEFUL_VAL = 500  # below this, one standard error of a validation accuracy exceeds 2 points: selection is noise


def default_run_dir(cfg: RunConfig) -> Path:
    """``<out_dir>/<name>``, the name defaulting to method-dataset-seed."""
    stem = Path(cfg.data.name.rstrip("/")).name.split(".")[0] or "data"
    return Path(cfg.train.out_dir) / (cfg.train.name or f"{cfg.method}-{stem}-s{cfg.train.seed}")


def build_source_model(cfg: RunConfig, num_classes: int, *, trains_head: bool = True,
                       log: Callable[[str], None] = print, source: nn.Module | None = None) -> nn.Module:
    """The source model with a head for ``num_classes`` (kept, or replaced as ``model.head`` says).

    Sources: a copy of the module ``source`` (the caller's stays as it is), else ``model.checkpoint`` (a file), else
    published weights named by a tagged arch such as ``resnet50.madry_linf4_in1k`` (downloaded once), else random init
    (robust pre-training from scratch). ``trains_head=False`` (a method that keeps the classifier fixed) refuses a head
    that would start random. A plain ``nn.Module`` keeps its head: robustft finds the head only of its own models.
    """
    m = cfg.model
    if source is not None:
        model = copy.deepcopy(source)
        if not isinstance(model, ImageClassifier):
            if m.head == "new" or m.init_head:
                raise UserError(f"model.{'init_head' if m.init_head else 'head=new'} replaces the classifier, which a "
                                f"plain {type(model).__name__} does not declare: give the module the head it should "
                                f"train, or build it with robustft.create_model or robustft.load_model")
            return model
    elif m.checkpoint is not None:
        model = load_checkpoint(m.arch, m.checkpoint, normalization=m.normalization, **m.options)
    elif "." in m.arch:
        model = create_model(m.arch, normalization=m.normalization, pretrained=True, **m.options)
    else:
        return load_checkpoint(m.arch, None, num_classes=num_classes, normalization=m.normalization, **m.options)
    source_classes = model.get_classifier().out_features
    if m.head == "keep" and source_classes != num_classes:
        raise UserError(f"model.head=keep but the source model has {source_classes} classes and the data "
                        f"{num_classes}; use model.head=auto or new")
    if m.head == "new" or source_classes != num_classes:
        if not trains_head and not m.init_head:
            raise UserError(f"method {cfg.method} does not train the classifier, but the source's {source_classes}-"
                            f"class head must be replaced for {num_classes} classes and would stay random: probe a "
                            f"head first (robustft finetune --method adv_linear_probe ...) and pass --init-head "
                            f"THAT_RUN_DIR, or --init-head a checkpoint with a {num_classes}-class classifier")
        model.reset_classifier(num_classes)
        log(f"model: a new {num_classes}-class head replaces the source's {source_classes}-class head "
            f"({f'initialized from {m.init_head}' if m.init_head else 'random init'})")
    if m.init_head:
        load_classifier(model, resolve_weights(m.init_head))
    return model


def source_config(cfg: RunConfig, source: nn.Module) -> RunConfig:
    """``cfg`` recording a given source module instead of a checkpoint: a robustft model's registered architecture and
    options (so its export rebuilds), a plain module's none (``model.arch`` empty); its normalization is its own."""
    arch, options = ((source.pretrained_cfg.architecture, dict(source.pretrained_cfg.options))
                     if isinstance(source, ImageClassifier) else ("", {}))
    return with_keys(cfg, {"model.arch": arch, "model.options": options, "model.checkpoint": None,
                           "model.normalization": None})


def _stage_config(cfg: RunConfig, stage: Stage) -> RunConfig:
    """The run config with a stage's overrides applied and ``optim.lr`` the effective rate (``optim.lr_scale_batch``
    resolved for ``data.batch_size``): what the stage trains with."""
    if stage.overrides:
        cfg = with_keys(cfg, stage.overrides)
    return dataclasses.replace(cfg, optim=resolve_lr(cfg.optim, cfg.data.batch_size))


def export_model(model: nn.Module, cfg: RunConfig, classes: list[str], run_dir: Path, metrics: dict[str, Any], *,
                 precision: dict[str, str], data: dict[str, Any]) -> None:
    """Plain ``state_dict`` (loads without robustft) plus its card (``card.write_card``), stating the run's resolved
    ``precision`` (``run_precision``) and ``data`` (``data_record``)."""
    layout = RunLayout(run_dir)
    save_state_dict(model, layout.model)
    write_card(model, to_dict(cfg), classes, layout.card, metrics, precision=precision, data=data)


def load_run_model(run_dir: str | Path, source: nn.Module | None = None) -> nn.Module:
    """The exported model of a finished run: rebuilt from its card (``load_exported_model``), or for a run that
    fine-tuned a module robustft cannot build by name, on a copy of ``source`` (that module, unchanged) as the run
    built it, with its method's export structure and the exported weights loaded strictly."""
    path = RunLayout(Path(run_dir)).model
    card = read_card(path)
    if card is None:
        raise UserError(f"{run_dir} has no exported model with its card ({path}): it is not a finished robustft run")
    if card["arch"] or source is None:
        return load_exported_model(card["arch"], path)
    cfg = from_dict(RunConfig, card["recipe"])
    model = build_source_model(cfg, card["num_classes"], source=source, log=lambda s: None)
    model = create_method(cfg.method, **cfg.method_args).export_architecture(model)
    model.load_state_dict(read_state_dict(path))
    return model


def _load(cfg: RunConfig, splits: dict[str, int | None], device: torch.device
          ) -> dict[str, ArrayDataset | PackedDataset]:
    """Splits (name -> subset size) of the configured dataset on ``device``, from one decode of the data."""
    return load_splits(cfg.data, splits, device=device)


def _check_test_split(cfg: RunConfig) -> None:
    """Fail before training, not after it, when the data has no test split (it is read only at the end)."""
    source = open_source(cfg.data)
    if "test" not in source.loaders:
        raise UserError(f"{cfg.data.name} has no test split (it has {', '.join(sorted(source.loaders))}); add one "
                        f"(test/<class>/... or test*.npz) or carve one from the training data with "
                        f"data.test_fraction=0.2, so the selected model can be tested once at the end")


def data_record(cfg: RunConfig, train: ArrayDataset | PackedDataset) -> dict[str, Any]:
    """What the run trained on, stated in results.json and the card: the image size (height, width) it trained at
    (``evaluate`` of the export resizes to it), the class subset, and where the test split comes from."""
    d = cfg.data
    test = (f"carved from the training data: class-stratified data.test_fraction={d.test_fraction:g} drawn with "
            f"data.split_seed={d.split_seed}, disjoint from train and val (evaluate --test-fraction "
            f"{d.test_fraction:g} --split-seed {d.split_seed})" if d.test_fraction is not None
            else "the dataset's own test split")
    if isinstance(train, PackedDataset):  # crops of images kept at their aspect ratio: evaluate needs both sizes
        return {"image_size": [train.size] * 2, "storage_size": d.storage_size, "classes": d.classes,
                "test_split": test}
    return {"image_size": list(train.x.shape[-2:]), "classes": d.classes, "test_split": test}


def _test(model: nn.Module, cfg: RunConfig, eps: float, device: torch.device, source: nn.Module | None
          ) -> tuple[dict[str, Any], dict[str, dict[str, str]]]:
    """Clean/PGD (and optional AutoAttack on a class-balanced subset, optional common corruptions) on the test
    split — the only test use — and the clean/PGD per-sample flags. With ``eval.test_source`` the source model,
    rebuilt from its checkpoint (or copied from the given ``source`` module), gets the same evaluation under
    ``test_source``: before/after in one record, each model tested once. Every rank of a torchrun job runs it:
    AutoAttack is sharded over the ranks (``eval.sharded``), the rest is the same on each, and rank 0 writes."""
    from ..eval import evaluate_corruptions

    test = _load(cfg, {"test": cfg.data.test_n}, device)["test"]
    if isinstance(test, PackedDataset):
        test = test.render()  # the centre crops, once: attacks and corruptions all see the same images
    options = dict(eps=eps, norm=cfg.attack.norm, steps=cfg.eval.test_steps, seed=cfg.train.seed)
    attacks = [create_attack(a, **options, random_start=cfg.eval.test_random_start)
               for a in cfg.eval.test_attacks if a != "autoattack"]
    batch, cl, seed = cfg.data.eval_batch_size, cfg.train.channels_last, cfg.train.seed

    flags: dict[str, dict[str, str]] = {}

    def measure(m: nn.Module, key: str) -> dict[str, Any]:
        result = evaluate(m, test, attacks, batch_size=batch, seed=seed, channels_last=cl)
        flags[key] = result.flags()
        out = {"test": result.to_dict()}
        if "autoattack" in cfg.eval.test_attacks:
            out["test_autoattack"] = subset_autoattack(lambda: (m, test), cfg.eval.autoattack_n or len(test),
                                                       with_pgd=False, batch_size=batch, channels_last=cl, **options)
        if cfg.eval.corruptions:
            corrupted = evaluate_corruptions(
                m, test, cfg.eval.corruptions, cfg.eval.corruption_severities, seed=seed, batch_size=batch,
                channels_last=cl, corruption_dir=cfg.eval.corruption_dir, n=cfg.eval.corruption_n)
            out["test_corruptions"] = corrupted.to_dict()
            flags[key].update({f"corruption:{k}": v for k, v in corrupted.flags.items()})
        return out

    out = measure(model, "test")
    if cfg.eval.test_source:
        before = build_source_model(cfg, test.num_classes, source=source).to(device)
        out["test_source"] = measure(before.to(memory_format=torch.channels_last) if cl else before, "test_source")
    return out, flags


def run(cfg: RunConfig, *, run_dir: Path | None = None, resume: bool = False,
        log: Callable[[str], None] = print, model: nn.Module | None = None) -> dict[str, Any]:
    """Train, select on validation, export and test; returns (and writes) ``results.json``. ``model``: a module to
    fine-tune (a copy of it; recorded by ``source_config``) instead of the source ``cfg.model`` names."""
    if model is not None:
        cfg = source_config(cfg, model)
    if not cfg.data.name or not (cfg.model.arch or model is not None):
        raise UserError("a run needs data.name and model.arch (from --config, --data/--arch or --set), or from Python "
                        "a module to fine-tune: robustft.finetune(model, data)")
    info = init_distributed(cfg.train.device)
    try:
        return _run(cfg, run_dir or default_run_dir(cfg), resume, info, log if info.is_main else (lambda s: None),
                    model)
    finally:
        cleanup(info)


def _same_config(saved: Path, cfg: RunConfig) -> bool:
    """Whether the config a run was started with is ``cfg``. Keys added to robustft since then count at their defaults
    (a run started by an older version resumes, and a finished one is reused, when it chose what the defaults say)."""
    try:
        data = read_yaml(saved, f"the run's config {saved}")
    except UserError as e:
        raise UserError(f"cannot resume: {e}; restore it, or start a new run (another train.name / --run-dir)"
                        ) from None
    try:
        started = to_dict(from_dict(RunConfig, data))
    except (UserError, TypeError, AttributeError):  # a key robustft no longer has, or a damaged file
        return False
    return yaml.safe_load(yaml.safe_dump(started)) == yaml.safe_load(yaml.safe_dump(to_dict(cfg)))


@contextlib.contextmanager
def _run_lock(run_dir: Path, info: DistInfo) -> Iterator[None]:
    """Rank 0 holds the run directory's lock for the whole run; if it cannot, every rank stops with its error."""
    with contextlib.ExitStack() as stack:
        failure: UserError | None = None
        if info.is_main:
            try:
                stack.enter_context(locked(RunLayout(run_dir).lock, "run directory"))
            except UserError as e:
                failure = e
        flag = all_reduce_sum(torch.tensor([float(failure is not None)], device=info.device), info)
        if flag.item():
            raise failure or UserError(f"run directory {run_dir} is in use by another robustft process")
        yield


def _prepare_run_dir(cfg: RunConfig, run_dir: Path, resume: bool, info: DistInfo, log: Callable[[str], None]) -> None:
    """Under the lock: check the directory again (another process may have started it since), remove what killed
    writers left, and write the config of a new run."""
    started = RunLayout(run_dir).claim(resume, lambda saved: _same_config(saved, cfg), lambda s: None)
    barrier(info)  # every rank has looked before rank 0 writes (else a slow rank would find the new run and refuse)
    if info.is_main:
        for path in remove_stale_temporaries(RunLayout(run_dir).written_dirs()):
            log(f"removed {path}, left by an interrupted write")
        if not started:
            atomic_write(RunLayout(run_dir).config,
                         lambda tmp: Path(tmp).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False)))
    barrier(info)


def _describe_threat(cfg: RunConfig, eps: float, attack: PGD) -> str:
    """One line naming the threat model of training, validation and test."""
    return (f"threat model: {cfg.attack.norm} eps {format_value(eps)} ({eps:.4f}); train PGD-{attack.steps} step "
            f"{attack.step_size:.4f}, val PGD-{cfg.eval.val_steps}, test {', '.join(cfg.eval.test_attacks)} "
            f"(PGD-{cfg.eval.test_steps})")


def _run(cfg: RunConfig, run_dir: Path, resume: bool, info: DistInfo, log: Callable[[str], None],
         source: nn.Module | None) -> dict[str, Any]:
    """The body of ``run`` inside the process group: check and open everything, then lock, write and train."""
    results_path = RunLayout(run_dir).results
    if RunLayout(run_dir).claim(resume, lambda saved: _same_config(saved, cfg), log) and results_path.exists():
        log(f"{run_dir} is already complete")
        return RunLayout(run_dir).read_results()
    start = time.perf_counter()
    seed_everything(cfg.train.seed)
    device = info.device
    splits = _load(cfg, {"train": cfg.data.train_n, "val": cfg.data.val_n}, device)
    train, val = splits["train"], splits["val"]
    _check_test_split(cfg)
    check_training_classes(train)
    height, width = data_record(cfg, train)["image_size"]
    stored = ("" if cfg.data.storage_size is None else
              f" cropped from images kept at their aspect ratio, shorter side {cfg.data.storage_size} "
              f"(data.storage_size)")
    log(f"data: {len(train)} train / {len(val)} val images of {width}x{height} pixels"
        f"{'' if cfg.data.image_size is None else ' (data.image_size)'}{stored}, {train.num_classes} classes"
        f"{'' if cfg.data.classes is None else ' (data.classes: ' + ', '.join(train.classes) + ')'}"
        f"{'' if cfg.data.test_fraction is None else '; test split ' + data_record(cfg, train)['test_split']}")
    if len(val) < MIN_USEFUL_VAL and cfg.eval.select != "last":
        warn(f"the validation split has only {len(val)} images: accuracies on it vary by about "
             f"±{50 / len(val) ** 0.5:.1f} points (one standard error) from sampling alone, so epoch selection is "
             f"mostly noise; raise data.val_fraction or data.val_n")
    eps = cfg.attack.eps
    attack = PGD(eps=eps, norm=cfg.attack.norm, steps=cfg.attack.steps, step_size=cfg.attack.step_size,
                 name="pgd_train")
    method = create_method(cfg.method, attack, **cfg.method_args)
    model = build_source_model(cfg, train.num_classes, trains_head=method.trains_head, log=log, source=source)
    model = model.to(device)
    check_structure(cfg.method, model)
    if not isinstance(model, ImageClassifier) and (outputs := num_outputs(model, train)) != train.num_classes:
        raise UserError(f"the {type(model).__name__} gives {outputs} logits per image but {cfg.data.name} has "
                        f"{train.num_classes} classes: give it a {train.num_classes}-output head (robustft replaces "
                        f"the head only of its own models: robustft.create_model / robustft.load_model)")
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    log(_describe_threat(cfg, eps, attack))
    precision = run_precision(device, cfg.train.amp)
    log(f"precision: training {precision['train']} (train.amp={cfg.train.amp} on {device.type}), validation and test "
        f"{precision['eval']}")
    check_writable(run_dir, directory=True)
    with _run_lock(run_dir, info):
        _prepare_run_dir(cfg, run_dir, resume, info, log)
        return _train_and_test(cfg, run_dir, resume, info, log, model, method, train, val, eps, start, source)


def _train_and_test(cfg: RunConfig, run_dir: Path, resume: bool, info: DistInfo, log: Callable[[str], None],
                    model: nn.Module, method: Method, train: ArrayDataset | PackedDataset,
                    val: ArrayDataset | PackedDataset, eps: float,
                    start: float, source: nn.Module | None) -> dict[str, Any]:
    """Set the method up, train each stage, finalize, test once, export."""
    device = info.device
    ctx = RunContext(train=train, val=val, cfg=cfg, run_dir=run_dir, device=device, is_main=info.is_main, log=log,
                     source_state={k: v.detach().clone() for k, v in model.state_dict().items()})
    if resume and RunLayout(run_dir).last.exists():  # a one-stage run: what its method decided before training
        method.load_state_dict(saved_method_state(RunLayout(run_dir).last, device))  # (RiFT's MRC) is not redone
    method.setup(model, ctx)
    stages = method.stages()
    if len(stages) > 1:
        log("budget: " + ", ".join(f"stage {st.name} {_stage_config(cfg, st).train.epochs} epochs ({st.epochs_key})"
                                   for st in stages))
    precision = run_precision(device, cfg.train.amp)
    results: dict[str, Any] = {"method": cfg.method, "run_dir": str(run_dir), "precision": precision,
                               "data": data_record(cfg, train), "stages": {}}
    resumed_s = 0.0  # epochs finished by an earlier, interrupted invocation count towards the run's wall time
    for i, stage in enumerate(stages):
        stage_dir = RunLayout(run_dir).stage(i, stage.name, len(stages))
        stage_cfg = _stage_config(cfg, stage)
        model = stage.method.prepare(model)
        scale = cfg.optim.lr_scale_batch
        log(f"stage {stage.name}: {sum(p.numel() for _, p in stage.method.trainable_parameters(model)):,} "
            f"trainable parameters, {stage_cfg.train.epochs} epochs ({stage.epochs_key}), lr {stage_cfg.optim.lr:g}"
            + (f" (the configured {stage_cfg.optim.lr * scale / cfg.data.batch_size:g} × batch "
               f"{cfg.data.batch_size} / optim.lr_scale_batch {scale})" if scale else ""))
        result = fit(stage.method, model, train, val, stage_cfg, stage_dir.root, info, resume=resume, log=log)
        load_best_weights(model, stage_dir.best, device)
        results["stages"][stage.name] = {"best_epoch": result.best_epoch, "best_val": result.best,
                                         "run_dir": str(stage_dir.root)}
        resumed_s += result.resumed_s
    model = method.finalize(model, ctx)
    record, flags = _test(model, cfg, eps, device, source)  # every rank: AutoAttack is sharded over them
    if info.is_main:
        results.update(method.results())
        results.update(record)
        results["wall_s"] = time.perf_counter() - start + resumed_s
        results["provenance"] = provenance(cfg.train.seed)
        final_val = results["stages"][stages[-1].name]["best_val"]
        export_model(model, cfg, train.classes, run_dir, {"val": final_val, "test": results["test"]},
                     precision=precision, data=results["data"])
        atomic_write_json({"n": results["test"]["n"], **flags}, RunLayout(run_dir).samples)
        atomic_write_json(results, RunLayout(run_dir).results)
        t = results["test"]
        log(f"test: clean {t['clean_acc']:.4f}  " + "  ".join(f"{k} {v:.4f}" for k, v in t["robust_acc"].items()))
    barrier(info)
    return results
