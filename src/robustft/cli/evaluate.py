"""``robustft evaluate`` and ``robustft mrc``: a checkpoint's clean, robust and corruption accuracy, and its module
robust criticality."""

import argparse
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..schema import format_value
from .options import _data_spec, _load_model


def _describe_attack(attack) -> str:
    """``pgd20 (step 0.0039, 1 restart)`` or ``autoattack (standard)``: what an evaluation attack does."""
    if hasattr(attack, "step_size"):
        return f"{attack.name} (step {attack.step_size:.4f}, {attack.restarts} restart{'s' * (attack.restarts > 1)})"
    return f"{attack.name} ({getattr(attack, 'version', '')})"


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Clean + robust accuracy of a checkpoint on a dataset split; under torchrun, AutoAttack sharded over the ranks."""
    from .._io import check_not_input, check_writable
    from ..attacks import create_attack
    from ..engine.distributed import cleanup, init_distributed

    attacks = [create_attack(name, eps=args.eps, norm=args.norm, steps=args.steps, step_size=args.step_size,
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
        _evaluate(args, attacks, info.device, info.is_main)
    finally:
        cleanup(info)
    return 0


def _evaluate(args: argparse.Namespace, attacks: list[Any], device: Any, is_main: bool) -> None:
    """``cmd_evaluate`` after its checks: on ``device``; only the main process prints and writes."""
    import torch

    from .._io import atomic_write_json
    from ..data import PackedDataset, load_dataset
    from ..eval import balanced_subset, evaluate_corruptions
    from ..eval.sharded import evaluate_sharded
    from ..runtime import provenance, seed_everything

    say = print if is_main else (lambda *_: None)
    seed_everything(args.seed)
    balanced = args.class_balanced and args.n is not None
    spec, resize_to = _data_spec(args, args.checkpoint)
    data = load_dataset(spec, args.split, n=None if balanced else args.n, device=device, resize_to=resize_to)
    if balanced:
        data = balanced_subset(data, args.n)
    if isinstance(data, PackedDataset):
        data = data.render()  # the centre crops, once: every attack and corruption sees the same images
    model = _load_model(args, data.num_classes).to(device)
    channels_last = not args.no_channels_last
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    say(f"data: {len(data)} {args.split} images of {data.x.shape[-1]}x{data.x.shape[-2]} pixels, "
        f"{data.num_classes} classes; threat model: {args.norm} eps {format_value(args.eps)} ({args.eps:.4f}), "
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
        from ..eval.leaderboard import leaderboard_record

        atomic_write_json(leaderboard_record(result, dataset=args.data, architecture=args.arch,
                                             eps=format_value(args.eps),
                                             split=args.split, provenance=record["provenance"]), args.leaderboard_json)
        say(f"wrote {args.leaderboard_json}")


def cmd_mrc(args: argparse.Namespace) -> int:
    """Module robust criticality of every Conv2d/Linear module of a checkpoint: table, bar plot, JSON."""
    from .._io import check_writable
    from ..data import load_dataset
    from ..eval import balanced_subset
    from ..eval.mrc import examples_attack, mrc_examples, mrc_profile
    from ..methods.rift import save_mrc
    from ..runtime import provenance, resolve_device, seed_everything

    if args.split == "test":
        raise UserError("MRC examples come from training data (train or val), never from the test split")
    check_writable(args.out_dir, directory=True)
    device = resolve_device(args.device)
    seed_everything(args.seed)
    balanced = args.class_balanced and args.n is not None
    spec, resize_to = _data_spec(args, args.checkpoint)
    data = load_dataset(spec, args.split, device=device, resize_to=resize_to)
    if balanced:
        data = balanced_subset(data, args.n)
    model = _load_model(args, data.num_classes).to(device)
    x_adv, y = mrc_examples(model, data, None if balanced else args.n, eps=args.attack_eps,
                            steps=args.attack_steps, step_size=args.attack_step_size, seed=args.seed,
                            batch_size=args.batch_size)
    profile = mrc_profile(model, x_adv, y, modules=args.modules.split(",") if args.modules else None, eps=args.eps,
                          steps=args.steps, lr=args.lr, batch_size=args.batch_size, impl=args.impl,
                          minibatch=args.minibatch, seed=args.seed, log=print if args.verbose else None)
    profile.examples = {"data": args.data, "split": args.split, "n": len(y), "class_balanced": balanced,
                        "attack": examples_attack(args.attack_eps, args.attack_steps, args.attack_step_size),
                        "seed": args.seed}
    paths = save_mrc(profile, args.out_dir, extra={"checkpoint": args.checkpoint, "arch": args.arch,
                                                   "provenance": provenance(args.seed)})
    print(profile.table())
    print(f"lowest MRC: {profile.lowest()}  (origin loss {profile.origin_loss:.4f}, acc {profile.origin_acc:.4f}; "
          f"{profile.wall_s:.1f} s)")
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0
