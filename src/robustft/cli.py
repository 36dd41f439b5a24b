"""Command-line interface: parse arguments, check what only the command line can get wrong, call the library, print
a short summary."""

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, NoReturn

from .errors import UserError, shown
from .mrc_config import IMPLEMENTATIONS, MRC_DEFAULTS
from .shortcuts import SHORTCUTS

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    """argparse with robustft's error format: one line, then exit status 2."""

    def error(self, message: str) -> NoReturn:
        """Print ``robustft: error: ...`` (naming the command's --help) instead of the usage block."""
        self.exit(2, f"robustft: error: {message} (see `{self.prog} --help`)\n")


def _integer(text: str, low: int, high: int | None = None) -> int:
    """``text`` as an integer in ``low..high`` (no upper bound: None), else an argparse error."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{shown(text)} is not an integer") from None
    if value < low or (high is not None and value > high):
        raise argparse.ArgumentTypeError(f"must be >= {low}{'' if high is None else f' and <= {high}'}, got "
                                         f"{shown(value)}")
    return value


def _count(text: str) -> int:
    """An argparse type: an integer >= 1."""
    return _integer(text, 1)


def _positive(text: str) -> float:
    """An argparse type: a number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def _seed(text: str) -> int:
    """An argparse type: a seed, an integer in 0..2**32-1 (what every generator robustft seeds accepts)."""
    return _integer(text, 0, 2**32 - 1)


def _fraction(text: str) -> float:
    """An argparse type: a number strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be > 0 and < 1, got {text}")
    return value


def _classes(text: str) -> list[int | str]:
    """An argparse type: a comma list of classes, integers as indices and anything else as names (as in YAML)."""
    return [int(c) if c.strip().isdigit() else c.strip() for c in text.split(",")]


def _limits(args: argparse.Namespace):
    """The decoding limits the data flags set (the library's defaults for those not given)."""
    from .data import DecodeLimits

    given = {k: getattr(args, k) for k in ("max_file_mb", "max_image_pixels", "max_array_mb", "max_classes")}
    return DecodeLimits(**{k: v for k, v in given.items() if v is not None})


def _data_options(args: argparse.Namespace, checkpoint: str | None) -> dict[str, Any]:
    """``load_dataset`` keywords from the data flags; where the flags give none, the image size and class subset of a
    robustft export's card, or the input size a hub model directory's ``config.json`` states (said in one line each),
    so the model sees what it was trained on."""
    from .card import card_inputs, read_card
    from .models import read_hub_config

    card = read_card(checkpoint) if checkpoint else None
    size, subset = card_inputs(card)
    image_size, classes, storage_size = args.image_size, args.classes, None
    if image_size is None and size is not None:
        image_size = size[0] if size[0] == size[1] else size
        storage_size = card["data"].get("storage_size")
        stored = ("" if storage_size is None else
                  f", centre crops of images resized to {storage_size} px on the shorter side")
        print(f"image size {size[1]}x{size[0]}{stored}: the size the export was trained at, from its card "
              f"(--image-size N to change)")
    elif image_size is None and checkpoint and (hub := read_hub_config(checkpoint)) and hub.input_size:
        _, height, width = hub.input_size
        if height != width:
            raise UserError(f"{checkpoint}/config.json states a {height}x{width} input; pass --image-size N (square)")
        image_size = height
        print(f"image size {height} px, the input size stated in {Path(checkpoint) / 'config.json'}")
    if classes is None and subset is not None:
        classes = subset
        print(f"classes {', '.join(subset)}: the export's class subset, from its card (--classes to change)")
    return dict(root=args.data_root, val_fraction=args.val_fraction, split_seed=args.split_seed, image_size=image_size,
                limits=_limits(args), x_key=args.x_key, y_key=args.y_key, classes=classes,
                test_fraction=args.test_fraction, storage_size=storage_size)


def _add_data_args(p: argparse.ArgumentParser, split: str) -> None:
    """Dataset selection flags shared by every command that reads data."""
    p.add_argument("--data", required=True,
                   help="a dataset name (robustft datasets: cifar10, caltech256, imagenet, ...) | image-folder "
                        "dir/.zip | .npz dir/file")
    p.add_argument("--data-root", default=None, help="root of named datasets (default $ROBUSTFT_DATA or user cache)")
    p.add_argument("--split", default=split, help="train | val | test | train_full (val is carved from train)")
    p.add_argument("--n", type=_count, default=None, help="deterministic subset: indices round(i*len/n), i < n")
    p.add_argument("--class-balanced", action="store_true",
                   help="with --n: the first n/C images of every class instead (e.g. for AutoAttack on a budget)")
    p.add_argument("--val-fraction", type=float, default=0.1, help="fraction of train carved out as validation")
    p.add_argument("--test-fraction", type=_fraction, default=None,
                   help="carve a class-stratified test split of this fraction from train (as data.test_fraction)")
    p.add_argument("--split-seed", type=_seed, default=0, help="seed of the stratified train/val (and test) splits")
    p.add_argument("--classes", type=_classes, default=None,
                   help="comma list of class indices or names to keep, relabelled 0..k-1 in this order (default: all, "
                        "or a robustft export's class subset from its card)")
    p.add_argument("--x-key", default=None, help=".npz images array (default: x, else the only uint8 image array)")
    p.add_argument("--y-key", default=None, help=".npz labels array (default: y, else the only integer label array)")
    p.add_argument("--image-size", type=_count, default=None,
                   help="resize images to this square size (default: as stored, or the size a robustft export's card "
                        "records)")
    p.add_argument("--max-file-mb", type=_positive, default=None,
                   help="largest image file read, in MB, checked before reading (default: as data.max_file_mb)")
    p.add_argument("--max-image-pixels", type=_count, default=None,
                   help="largest image (width x height, from its header) decoded (default: as data.max_image_pixels)")
    p.add_argument("--max-array-mb", type=_positive, default=None,
                   help="largest .npz array read, in MB decompressed (default: as data.max_array_mb)")
    p.add_argument("--max-classes", type=_count, default=None,
                   help="most classes (class directories, or the largest .npz label + 1) accepted (default: as "
                        "data.max_classes)")


_SET_ELSEWHERE = {"num_classes": "--num-classes", "normalization": "--normalization"}


def _model_arg(text: str) -> tuple[str, Any]:
    """An argparse type: ``KEY=VALUE``, the value parsed as YAML like a config value (``width=4``, ``final_bn=no``)."""
    from ._yaml import load_yaml

    key, sep, raw = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"{text!r} must look like KEY=VALUE, e.g. width=4")
    if key in _SET_ELSEWHERE:
        raise argparse.ArgumentTypeError(f"{key} has its own flag: use {_SET_ELSEWHERE[key]}")
    try:
        return key, load_yaml(raw, f"cannot parse the value of {text!r}") if raw else None
    except UserError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _add_model_args(p: argparse.ArgumentParser) -> None:
    """Model/checkpoint flags shared by every command that loads a model."""
    p.add_argument("--checkpoint", default=None, help="state dict (.pt/.pth/.ckpt/.safetensors); weights only")
    p.add_argument("--arch", required=True, help="architecture name (see `robustft models`)")
    p.add_argument("--normalization", default=None,
                   help="none | cifar10 | cifar100 | imagenet | 'm1,m2,m3/s1,s2,s3' (default: the checkpoint's "
                        "or its card's; for weights without any, the architecture's, with a warning)")
    p.add_argument("--num-classes", type=_count, default=None,
                   help="outputs of the model's head (default: the data's class count); labels index them")
    p.add_argument("--model-arg", action="append", type=_model_arg, default=None, metavar="KEY=VALUE",
                   help="architecture option passed to its constructor, value parsed as YAML (e.g. width=4, "
                        "final_bn=false); repeatable; overrides an export card's model.options")
    p.add_argument("--adapter", default=None,
                   help="adapter-only export (robustft export --adapter-only) to attach to --checkpoint, its base")


def _load_model(args: argparse.Namespace, data_classes: int):
    """The model the model flags name, with --num-classes outputs (default: the data's ``data_classes``)."""
    from .card import load_exported_model

    num_classes = args.num_classes or data_classes
    if num_classes < data_classes:
        raise UserError(f"--num-classes {num_classes} is fewer than the {data_classes} classes of the data, whose "
                        f"labels index the model's outputs")
    if args.adapter:  # the base keeps its own head; the adapter file brings the fine-tuned one
        from .adapters import load_adapters

        base = load_exported_model(args.arch, args.checkpoint, normalization=args.normalization,
                                   **dict(args.model_arg or []))
        return load_adapters(base, args.adapter)
    return load_exported_model(args.arch, args.checkpoint, num_classes=num_classes, normalization=args.normalization,
                               **dict(args.model_arg or []))


def _add_attack_args(p: argparse.ArgumentParser) -> None:
    """Threat-model flags."""
    p.add_argument("--attack", action="append", default=None, help="pgd | fgsm | autoattack (repeatable; default pgd)")
    p.add_argument("--eps", default="8/255", help="perturbation budget in [0,1] pixel units, e.g. 8/255")
    p.add_argument("--norm", default="linf", choices=["linf", "l2"])
    p.add_argument("--steps", type=_count, default=20, help="PGD steps")
    p.add_argument("--step-size", default=None, help="PGD step (default max(2.5*eps/steps, eps/4))")
    p.add_argument("--restarts", type=_count, default=1, help="PGD restarts (per-sample worst case kept)")
    p.add_argument("--aa-version", default="standard", help="AutoAttack version: standard | plus | rand | custom")
    p.add_argument("--aa-attacks", default=None, help="comma list for --aa-version custom, e.g. apgd-ce,apgd-t")


def _describe_attack(attack) -> str:
    """``pgd20 (step 0.0039, 1 restart)`` or ``autoattack (standard)``: what an evaluation attack does."""
    if hasattr(attack, "step_size"):
        return f"{attack.name} (step {attack.step_size:.4f}, {attack.restarts} restart{'s' * (attack.restarts > 1)})"
    return f"{attack.name} ({getattr(attack, 'version', '')})"


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Clean + robust accuracy of a checkpoint on a dataset split; under torchrun, AutoAttack sharded over the ranks."""
    from ._io import check_not_input, check_writable
    from .attacks import create_attack, parse_eps
    from .engine.distributed import cleanup, init_distributed

    eps = parse_eps(args.eps)
    attacks = [create_attack(name, eps=eps, norm=args.norm, steps=args.steps,
                             step_size=parse_eps(args.step_size) if args.step_size else None,
                             restarts=args.restarts, seed=args.seed, aa_version=args.aa_version,
                             aa_attacks=args.aa_attacks.split(",") if args.aa_attacks else None)
               for name in (args.attack or ["pgd"])]
    card = Path(args.checkpoint).with_suffix(".json") if args.checkpoint else None
    inputs = [args.checkpoint, card, args.data if Path(args.data).exists() else None]
    if args.json:
        check_not_input(args.json, inputs, "--json")
        check_writable(args.json)
    if args.leaderboard_json:
        if "autoattack" not in (args.attack or []):
            raise UserError("--leaderboard-json records AutoAttack accuracy, the leaderboard's robust accuracy: add "
                            "--attack autoattack")
        check_not_input(args.leaderboard_json, inputs, "--leaderboard-json")
        check_writable(args.leaderboard_json)
    info = init_distributed(args.device)
    try:
        if info.world_size > 1 and (set(args.attack or ["pgd"]) != {"autoattack"} or args.corruptions):
            raise UserError(f"under torchrun ({info.world_size} processes) evaluate shards AutoAttack only: give "
                            f"--attack autoattack alone, and run PGD/FGSM and --corruptions in one process")
        _evaluate(args, attacks, eps, info.device, info.is_main)
    finally:
        cleanup(info)
    return 0


def _evaluate(args: argparse.Namespace, attacks: list[Any], eps: float, device: Any, is_main: bool) -> None:
    """``cmd_evaluate`` after its checks: on ``device``; only the main process prints and writes."""
    import torch

    from ._io import atomic_write_json
    from .data import PackedDataset, load_dataset
    from .eval import balanced_subset, evaluate_corruptions
    from .eval.sharded import evaluate_sharded
    from .runtime import provenance, seed_everything

    say = print if is_main else (lambda *_: None)
    seed_everything(args.seed)
    balanced = args.class_balanced and args.n is not None
    data = load_dataset(args.data, args.split, n=None if balanced else args.n, device=device,
                        **_data_options(args, args.checkpoint))
    if balanced:
        data = balanced_subset(data, args.n)
    if isinstance(data, PackedDataset):
        data = data.render()  # the centre crops, once: every attack and corruption sees the same images
    model = _load_model(args, data.num_classes).to(device)
    channels_last = not args.no_channels_last
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    say(f"data: {len(data)} {args.split} images of {data.x.shape[-1]}x{data.x.shape[-2]} pixels, "
        f"{data.num_classes} classes; threat model: {args.norm} eps {args.eps} ({eps:.4f}), "
        + ", ".join(_describe_attack(a) for a in attacks))
    result = evaluate_sharded(model, data, attacks, batch_size=args.batch_size, seed=args.seed,
                              channels_last=channels_last, progress=is_main)
    record = {**result.to_dict(), "checkpoint": args.checkpoint, "arch": args.arch, "data": args.data,
              "split": args.split, "subset_n": args.n, "image_size": list(data.x.shape[-2:]), "device": str(device),
              "provenance": provenance(args.seed), "samples": result.flags()}
    say(f"n={result.n}  clean {result.clean_acc:.4f}  " + "  ".join(
        f"{k} {v:.4f}" for k, v in result.robust_acc.items()) + f"  worst-case {result.worst_case_acc:.4f}"
        f"  ({result.timing['total']:.1f} s)")
    if args.corruptions:
        corrupted = evaluate_corruptions(model, data, args.corruptions, args.severity, seed=args.seed,
                                         batch_size=args.batch_size, channels_last=channels_last,
                                         corruption_dir=args.corruption_dir,
                                         n=args.n if args.corruption_dir else None)
        record["corruptions"] = corrupted.to_dict()
        say(corrupted.table())
        say(f"mean corruption accuracy {corrupted.mean:.4f} over {len(corrupted.accuracy)} corruptions x "
            f"{len(corrupted.severities)} severities ({corrupted.timing_s:.1f} s)")
    if not is_main:
        return
    if args.json:
        atomic_write_json(record, args.json)
        say(f"wrote {args.json}")
    if args.leaderboard_json:
        from .eval.leaderboard import leaderboard_record

        atomic_write_json(leaderboard_record(result, dataset=args.data, architecture=args.arch, eps=args.eps,
                                             split=args.split, provenance=record["provenance"]), args.leaderboard_json)
        say(f"wrote {args.leaderboard_json}")


def cmd_mrc(args: argparse.Namespace) -> int:
    """Module robust criticality of every Conv2d/Linear module of a checkpoint: table, bar plot, JSON."""
    from ._io import check_writable
    from .attacks import parse_eps
    from .data import load_dataset
    from .eval import balanced_subset
    from .eval.mrc import mrc_examples, mrc_profile
    from .methods.rift import save_mrc
    from .runtime import provenance, resolve_device, seed_everything

    if args.split == "test":
        raise UserError("MRC examples come from training data (train or val), never from the test split")
    check_writable(args.out_dir, directory=True)
    device = resolve_device(args.device)
    seed_everything(args.seed)
    balanced = args.class_balanced and args.n is not None
    data = load_dataset(args.data, args.split, device=device, **_data_options(args, args.checkpoint))
    if balanced:
        data = balanced_subset(data, args.n)
    model = _load_model(args, data.num_classes).to(device)
    x_adv, y = mrc_examples(model, data, None if balanced else args.n, eps=parse_eps(args.attack_eps),
                            steps=args.attack_steps, step_size=parse_eps(args.attack_step_size), seed=args.seed,
                            batch_size=args.batch_size)
    profile = mrc_profile(model, x_adv, y, modules=args.modules.split(",") if args.modules else None, eps=args.eps,
                          steps=args.steps, lr=args.lr, batch_size=args.batch_size, impl=args.impl,
                          minibatch=args.minibatch, seed=args.seed, log=print if args.verbose else None)
    profile.examples = {"data": args.data, "split": args.split, "n": len(y), "class_balanced": balanced,
                        "attack": f"pgd{args.attack_steps} linf {args.attack_eps} step {args.attack_step_size}",
                        "seed": args.seed}
    paths = save_mrc(profile, args.out_dir, extra={"checkpoint": args.checkpoint, "arch": args.arch,
                                                   "provenance": provenance(args.seed)})
    print(profile.table())
    print(f"lowest MRC: {profile.lowest()}  (origin loss {profile.origin_loss:.4f}, acc {profile.origin_acc:.4f}; "
          f"{profile.wall_s:.1f} s)")
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


_SHORTCUT_HELP = {"epochs": "epochs of the main (last) stage, train.epochs; a multi-stage method's earlier stages have "
                            "their own key (RoLI / LP-FT probe: method_args.lp_epochs), printed at the start",
                 "lr": "peak learning rate, optim.lr (given for optim.lr_scale_batch's batch size when that is set); "
                       "a multi-stage method applies it to its main (last) stage: the RoLI / LP-FT probe has "
                       "method_args.lp_lr, and AutoLoRa's method_args.lr replaces it when set",
                 "batch_size": "training batch size, data.batch_size (global, over all ranks)",
                 "eps": "training perturbation budget in [0,1] pixel units, attack.eps, e.g. 8/255 (validation "
                        "and test use it too)"}


def _run_config(args: argparse.Namespace):
    """Config file + shortcut flags + ``--set`` overrides (in that order of precedence, last wins)."""
    from .engine import load_config

    shortcuts = [f"{key}={getattr(args, flag)}" for flag, key in SHORTCUTS.items() if getattr(args, flag) is not None]
    return load_config(args.config, shortcuts + (args.set or []))


def cmd_finetune(args: argparse.Namespace) -> int:
    """Fine-tune a source checkpoint with a method; select on validation; export and test the selected model."""
    from .engine import run

    cfg = _run_config(args)
    has_source = cfg.model.checkpoint is not None or "." in cfg.model.arch
    if args.command == "pretrain" and has_source:
        raise UserError("pretrain trains from scratch: remove model.checkpoint and any weight tag from model.arch "
                        "(use `robustft finetune` to start from a source model)")
    if args.command == "finetune" and not has_source:
        raise UserError("finetune needs a source model: set model.checkpoint (--checkpoint) or a tagged arch such "
                        "as resnet50.madry_linf4_in1k; use `robustft pretrain` to train from scratch")
    run(cfg, run_dir=args.run_dir, resume=args.resume)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Fine-tune the bundled robust model on the bundled task with standard and pgd_at; table + plot."""
    from .demo import run_demo

    run_demo(args.out_dir, overrides=args.set or [])
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Comparison table (markdown + CSV) and plots from finished run directories."""
    from ._io import check_writable
    from .report import compare_runs

    check_writable(args.out, directory=True)
    for path in compare_runs(args.run_dirs, args.out).paths:
        print(f"wrote {path}")
    return 0


def _seeds(text: str) -> list[int]:
    """An argparse type: a comma list of integer seeds, e.g. ``0,1,2``."""
    try:
        return [int(s) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma list of integers, e.g. 0,1,2") from None


def cmd_bench(args: argparse.Namespace) -> int:
    """Run (or resume) a benchmark protocol's grid and write its report."""
    import shlex

    from .bench import run_bench

    for path in run_bench(args.protocol, data_root=args.data_root, models_root=args.models_root, out=args.out,
                          report_dir=args.report_dir, seeds=args.seeds,
                          command="robustft " + shlex.join(sys.argv[1:])):
        print(f"wrote {path}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """A finished run's model as a plain state dict without normalize.* keys, with a card stating the normalization;
    or, with --adapter-only, its LoRA factors / adapters and head alone."""
    from .card import export_plain, read_card

    if args.adapter_only:
        from .adapters import export_adapters

        out = export_adapters(args.run, args.out)
        print(f"wrote {out} and {out.with_suffix('.json')}: load them onto the base with robustft evaluate "
              f"--checkpoint BASE --adapter {out}")
        return 0

    out = export_plain(args.run, args.out)
    stats = read_card(out)["normalize"]
    config = f", {out.parent / 'config.json'}" if not args.out.suffix else ""
    print(f"wrote {out}{config} and {out.with_suffix('.json')}; normalize inputs in [0,1] outside the model first: "
          f"mean {','.join(f'{v:g}' for v in stats['mean'])}, std {','.join(f'{v:g}' for v in stats['std'])}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    """List registered architectures and every published-weights tag with its source (markdown: the docs' table)."""
    from .models import KNOWN_WEIGHTS, list_models
    from .models.hub import weights_table

    if args.format == "markdown":
        print(weights_table(), end="")
        return 0
    print("architectures:\n" + "\n".join(f"  {name}" for name in list_models()))
    print("published weights (arch.tag: file, sha256, layout, what, source):")
    for name, w in KNOWN_WEIGHTS.items():
        print(f"  {name}: {w.url}, sha256 {w.sha256 or 'none (' + w.checksum_note + ')'}, {w.layout}; "
              f"{w.description}; {w.source}")
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    """Print every dataset name with its classes, official split sizes, split rule, source and licence."""
    from .data.catalog import table

    print(table(markdown=args.format == "markdown"), end="")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    """Print every config key with its type, default, range and help (with --method, that method's options)."""
    from .engine.config import describe_config
    from .schema import format_keys

    print(format_keys(describe_config(args.method, args.section), markdown=args.format == "markdown"), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``robustft`` argument parser with one sub-command per task."""
    from . import __version__

    parser = _Parser(prog="robustft", description=__doc__)
    parser.add_argument("--version", action="version", version=f"robustft {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("evaluate", help="clean / PGD / AutoAttack accuracy of a checkpoint")
    _add_model_args(p)
    _add_data_args(p, split="test")
    _add_attack_args(p)
    p.add_argument("--batch-size", type=_count, default=256)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--seed", type=_seed, default=0)
    p.add_argument("--no-channels-last", action="store_true", help="keep NCHW (channels_last is faster on CPU/GPU)")
    p.add_argument("--json", type=Path, default=None, help="write the results (with provenance) to this JSON file")
    p.add_argument("--leaderboard-json", type=Path, default=None,
                   help="also write a RobustBench model_info record (clean and AutoAttack accuracy in percent, eps, "
                        "architecture, dataset, n_ex, threat model, versions; needs --attack autoattack)")
    p.add_argument("--corruptions", default=None,
                   help="also common-corruption accuracy: all | comma list (e.g. gaussian_noise,fog); generated with "
                        "the CIFAR-10-C parameters unless --corruption-dir")
    p.add_argument("--severity", default="all", help="corruption severities: all | 1-5 | 3 | 1,3,5")
    p.add_argument("--corruption-dir", default=None,
                   help="published CIFAR-10-C-style directory (<name>.npy + labels.npy) to evaluate instead, or a "
                        "benchmark's name (cifar10_c, cifar100_c, tinyimagenet_c: fetched into the data root) "
                        "(--n then subsets each severity)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("mrc", help="module robust criticality (RiFT) of every Conv2d/Linear module: table, plot, JSON")
    _add_model_args(p)
    _add_data_args(p, split="train")
    mrc = MRC_DEFAULTS
    p.set_defaults(n=mrc.n)
    p.add_argument("--eps", type=_positive, default=mrc.eps, help="relative weight-perturbation radius ‖Δw‖ ≤ eps‖w‖")
    p.add_argument("--steps", type=_count, default=mrc.steps, help="gradient-ascent iterations per module")
    p.add_argument("--lr", type=_positive, default=mrc.lr, help="gradient-ascent step")
    p.add_argument("--impl", default=mrc.impl, choices=list(IMPLEMENTATIONS),
                   help="fast: only the module's downstream subgraph runs; reference: whole-model passes")
    p.add_argument("--modules", default=None, help="comma list of module names (default: every Conv2d/Linear)")
    p.add_argument("--attack-eps", default=mrc.attack_eps, help="L∞ budget of the PGD examples")
    p.add_argument("--attack-steps", type=_count, default=mrc.attack_steps, help="PGD steps of the examples")
    p.add_argument("--attack-step-size", default=mrc.attack_step_size, help="PGD step of the examples")
    p.add_argument("--minibatch", type=_count, default=mrc.minibatch,
                   help="the official regime: each iteration is a shuffled pass of SGD steps over mini-batches of "
                        "this many examples (official: 512), then one projection (default: one full-batch step)")
    p.add_argument("--batch-size", type=_count, default=mrc.batch_size, help="examples per forward (memory only)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--seed", type=_seed, default=0, help="seed of the PGD random starts and the mini-batch shuffles")
    p.add_argument("--out-dir", type=Path, default=Path("mrc"), help="where mrc.json, mrc.txt and mrc.png go")
    p.add_argument("--verbose", action="store_true", help="print each module's result as it is computed")
    p.set_defaults(func=cmd_mrc)

    for name, text in (("finetune", "fine-tune a robust source model (validation-only selection)"),
                       ("pretrain", "adversarial training from scratch (PGD-AT / TRADES)")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--config", type=Path, default=None, help="YAML config (see configs/)")
        p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key, e.g. optim.lr=0.01")
        for flag, key in SHORTCUTS.items():
            p.add_argument(f"--{flag.replace('_', '-')}", dest=flag, default=None, help=_SHORTCUT_HELP.get(
                flag, f"shortcut for --set {key}=..."))
        p.add_argument("--run-dir", type=Path, default=None, help="run directory (default <out_dir>/<name>)")
        p.add_argument("--resume", action="store_true", help="continue the run in the run directory")
        p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("demo", help="bundled demo: standard vs pgd_at fine-tuning, table + plot (no network)")
    p.add_argument("--out-dir", type=Path, default=Path("runs/demo"), help="where the two runs and the report go")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a demo config key")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("report", help="comparison table and plots from run directories")
    p.add_argument("run_dirs", nargs="+", type=Path, help="finished run directories (with results.json)")
    p.add_argument("--out", type=Path, default=Path("report"), help="output directory")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("bench", help="run a benchmark protocol (methods x tasks x seeds), resumable; table + plots")
    shipped = sorted(f.name.removesuffix(".yaml") for f in resources.files("robustft").joinpath(
        "assets", "protocols").iterdir() if f.name.endswith(".yaml"))
    p.add_argument("--protocol", required=True, help=f"a shipped protocol ({', '.join(shipped)}: "
                   "robustft/assets/protocols) or a protocol YAML file")
    p.add_argument("--data-root", default=None,
                   help="benchmark data root (default $ROBUSTFT_BENCH_DATA, else ../shared/data)")
    p.add_argument("--models-root", default=None,
                   help="source checkpoints root (default $ROBUSTFT_BENCH_MODELS, else <data-root>/../models)")
    p.add_argument("--out", type=Path, default=None, help="where the cells' runs go (default runs/bench/<protocol>)")
    p.add_argument("--report-dir", type=Path, default=None, help="where results.json/.md and plots go (default --out)")
    p.add_argument("--seeds", type=_seeds, default=None, help="comma list overriding the protocol's seeds")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("export", help="a finished run's model as a plain state dict that loads into torchvision/"
                                      "timm-style code (no normalize.* keys), its normalization in a card beside it")
    p.add_argument("run", help="finished run directory (or its exported model.pt)")
    p.add_argument("--adapter-only", action="store_true",
                   help="only the LoRA factors / adapters and the head of a RoLI-style run, with an adapter card")
    p.add_argument("--out", type=Path, required=True,
                   help="output file, .safetensors or .pt (the card goes beside it with .json), or a directory "
                        "(no suffix): a timm / HF hub model directory (model.safetensors, timm config.json, card)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("models", help="list architectures and published weights (arch.tag) with their sources")
    p.add_argument("--format", choices=["text", "markdown"], default="text",
                   help="markdown: the weights table of docs/models.md")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("datasets", help="every dataset name: classes, official split sizes, source, licence")
    p.add_argument("--format", choices=["text", "markdown"], default="text",
                   help="text: one block per dataset; markdown: one table (the docs' dataset table)")
    p.set_defaults(func=cmd_datasets)

    p = sub.add_parser("config", help="every config key: type, default, range and help (--method: its options too)")
    p.add_argument("--method", default=None, help="also list this method's options (method_args.*, its defaults)")
    p.add_argument("--section", default=None, help="only this section: top, data, model, ..., method_args")
    p.add_argument("--format", choices=["text", "markdown"], default="text",
                   help="text: aligned columns; markdown: one table per section (the docs' key tables)")
    p.set_defaults(func=cmd_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: user errors become one line on stderr and exit status 2."""
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except UserError as e:
        print(f"robustft: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("robustft: interrupted", file=sys.stderr)
        return 130
    except (MemoryError, RuntimeError) as e:
        if not _out_of_memory(e):
            raise
        print(f"robustft: error: out of memory ({(str(e).splitlines() or [type(e).__name__])[0][:200]}); "
              f"lower the batch size, or the image size (data.image_size / --image-size)", file=sys.stderr)
        return 2


def _out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` is a failed host or device allocation rather than a bug."""
    import torch

    return isinstance(err, (MemoryError, torch.OutOfMemoryError)) or "can't allocate memory" in str(err)


if __name__ == "__main__":
    sys.exit(main())
