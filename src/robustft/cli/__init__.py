"""Command-line interface: parse arguments, check what only the command line can get wrong, call the library, print
a short summary."""

import argparse
import sys
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path

from ..errors import UserError
from ..mrc_config import IMPLEMENTATIONS, MRC_DEFAULTS
from ..shortcuts import SHORTCUTS
from .evaluate import cmd_evaluate, cmd_mrc
from .options import _add_attack_args, _add_data_args, _add_model_args, _count, _eps, _Parser, _positive, _seed

__all__ = ["main"]


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
    from ..engine import load_config

    shortcuts = [f"{key}={getattr(args, flag)}" for flag, key in SHORTCUTS.items() if getattr(args, flag) is not None]
    return load_config(args.config, shortcuts + (args.set or []))


def cmd_finetune(args: argparse.Namespace) -> int:
    """Fine-tune a source checkpoint with a method; select on validation; export and test the selected model."""
    from ..engine import run

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
    from ..demo import run_demo

    run_demo(args.out_dir, overrides=args.set or [])
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Comparison table (markdown + CSV) and plots from finished run directories."""
    from .._io import check_writable
    from ..report import compare_runs

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

    from ..bench import run_bench

    for path in run_bench(args.protocol, data_root=args.data_root, models_root=args.models_root, out=args.out,
                          report_dir=args.report_dir, seeds=args.seeds,
                          command="robustft " + shlex.join(sys.argv[1:])):
        print(f"wrote {path}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """A finished run's model as a plain state dict without normalize.* keys, with a card stating the normalization;
    or, with --adapter-only, its LoRA factors / adapters and head alone."""
    from ..card import export_plain, read_card

    if args.adapter_only:
        from ..adapters import export_adapters

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
    from ..models import KNOWN_WEIGHTS, list_models
    from ..models.hub import weights_table

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
    from ..data.catalog import table

    print(table(markdown=args.format == "markdown"), end="")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    """Print every config key with its type, default, range and help (with --method, that method's options)."""
    from ..engine.config import describe_config
    from ..schema import format_keys

    print(format_keys(describe_config(args.method, args.section), markdown=args.format == "markdown"), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``robustft`` argument parser with one sub-command per task."""
    from .. import __version__

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
    p.add_argument("--attack-eps", type=_eps, default=mrc.attack_eps, help="L∞ budget of the PGD examples, e.g. 8/255")
    p.add_argument("--attack-steps", type=_count, default=mrc.attack_steps, help="PGD steps of the examples")
    p.add_argument("--attack-step-size", type=_eps, default=mrc.attack_step_size,
                   help="PGD step of the examples, e.g. 2/255")
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

