"""The command line's shared pieces: argument types that fail in one line, the data / model / attack flag groups, and
turning those flags into a ``DataSpec`` and a loaded model."""

import argparse
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from ..errors import UserError, shown

if TYPE_CHECKING:
    from ..data import DataSpec


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


def _eps(text: str) -> float:
    """An argparse type: a budget as a number or a fraction (``8/255``), >= 0."""
    from ..attacks import parse_eps

    try:
        return parse_eps(text)
    except UserError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


# data flag (argparse dest) -> the DataSpec key it sets; a flag not given leaves the key at DataSpec's default
_DATA_FLAGS = {"data": "name", "data_root": "root", **{k: k for k in (
    "val_fraction", "test_fraction", "split_seed", "classes", "x_key", "y_key", "image_size", "max_file_mb",
    "max_image_pixels", "max_array_mb", "max_classes")}}


def _data_spec(args: argparse.Namespace, checkpoint: str | None) -> "tuple[DataSpec, tuple[int, int] | None]":
    """The ``DataSpec`` the data flags set, and a (height, width) to resize to: where the flags give none, the image
    size and class subset of a robustft export's card, or the input size a hub model directory's ``config.json``
    states (said in one line each), so the model sees what it was trained on."""
    from ..card import card_inputs, read_card
    from ..data import DataSpec
    from ..models import read_hub_config

    given = {key: getattr(args, flag) for flag, key in _DATA_FLAGS.items() if getattr(args, flag) is not None}
    card = read_card(checkpoint) if checkpoint else None
    size, subset = card_inputs(card)
    resize_to = None
    if "image_size" not in given and size is not None:
        if size[0] == size[1]:
            given.update(image_size=size[0], storage_size=card["data"].get("storage_size"))
        else:
            resize_to = tuple(size)
        stored = ("" if given.get("storage_size") is None else
                  f", centre crops of images resized to {given['storage_size']} px on the shorter side")
        print(f"image size {size[1]}x{size[0]}{stored}: the size the export was trained at, from its card "
              f"(--image-size N to change)")
    elif "image_size" not in given and checkpoint and (hub := read_hub_config(checkpoint)) and hub.input_size:
        _, height, width = hub.input_size
        if height != width:
            raise UserError(f"{checkpoint}/config.json states a {height}x{width} input; pass --image-size N (square)")
        given["image_size"] = height
        print(f"image size {height} px, the input size stated in {Path(checkpoint) / 'config.json'}")
    if "classes" not in given and subset is not None:
        given["classes"] = subset
        print(f"classes {', '.join(subset)}: the export's class subset, from its card (--classes to change)")
    return DataSpec(**given), resize_to


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
    p.add_argument("--val-fraction", type=float, default=None,
                   help="fraction of train carved out as validation (default: as data.val_fraction)")
    p.add_argument("--test-fraction", type=_fraction, default=None,
                   help="carve a class-stratified test split of this fraction from train (as data.test_fraction)")
    p.add_argument("--split-seed", type=_seed, default=None,
                   help="seed of the stratified train/val (and test) splits (default: as data.split_seed)")
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
    from .._yaml import load_yaml

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
    from ..card import load_exported_model

    num_classes = args.num_classes or data_classes
    if num_classes < data_classes:
        raise UserError(f"--num-classes {num_classes} is fewer than the {data_classes} classes of the data, whose "
                        f"labels index the model's outputs")
    if args.adapter:  # the base keeps its own head; the adapter file brings the fine-tuned one
        from ..adapters import load_adapters

        base = load_exported_model(args.arch, args.checkpoint, normalization=args.normalization,
                                   **dict(args.model_arg or []))
        return load_adapters(base, args.adapter)
    return load_exported_model(args.arch, args.checkpoint, num_classes=num_classes, normalization=args.normalization,
                               **dict(args.model_arg or []))


def _add_attack_args(p: argparse.ArgumentParser) -> None:
    """Threat-model flags."""
    p.add_argument("--attack", action="append", default=None, help="pgd | fgsm | autoattack (repeatable; default pgd)")
    p.add_argument("--eps", type=_eps, default="8/255", help="perturbation budget in [0,1] pixel units, e.g. 8/255")
    p.add_argument("--norm", default="linf", choices=["linf", "l2"])
    p.add_argument("--steps", type=_count, default=20, help="PGD steps")
    p.add_argument("--step-size", type=_eps, default=None, help="PGD step, e.g. 2/255 (default max(2.5*eps/steps, "
                   "eps/4))")
    p.add_argument("--restarts", type=_count, default=1, help="PGD restarts (per-sample worst case kept)")
    p.add_argument("--aa-version", default="standard", help="AutoAttack version: standard | plus | rand | custom")
    p.add_argument("--aa-attacks", default=None, help="comma list for --aa-version custom, e.g. apgd-ce,apgd-t")
