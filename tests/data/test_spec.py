"""DataSpec: the data options and their defaults, written once — the run config's data section is one, load_dataset
reads one (its keywords are the spec's keys), and the CLI's data flags set one."""

import dataclasses
import inspect

import numpy as np
import pytest
import torch

from robustft.cli import build_parser
from robustft.cli.options import _data_spec
from robustft.data import DataSpec, load_dataset, load_splits, open_source
from robustft.engine import DataConfig, RunConfig, load_config
from robustft.errors import UserError

KEYS = [f.name for f in dataclasses.fields(DataSpec)]


def test_the_run_config_data_section_is_a_data_spec_with_its_defaults():
    assert issubclass(DataConfig, DataSpec) and isinstance(RunConfig().data, DataSpec)
    own = {f.name: f for f in dataclasses.fields(DataConfig)}
    assert all(own[f.name] is f for f in dataclasses.fields(DataSpec)), "DataConfig does not spell a key again"
    assert {k: getattr(RunConfig().data, k) for k in KEYS} == dataclasses.asdict(DataSpec())


def test_load_functions_take_the_spec_keys_without_defaults_of_their_own():
    for function in (load_dataset, load_splits, open_source):
        assert not set(inspect.signature(function).parameters) & set(KEYS), function.__name__


def test_cli_flags_not_given_leave_the_spec_defaults(tmp_path):
    args = build_parser().parse_args(["evaluate", "--arch", "cifar_resnet20", "--data", "some.npz"])
    assert args.val_fraction is None and args.split_seed is None and args.max_classes is None
    assert _data_spec(args, None) == (DataSpec(name="some.npz"), None)
    args = build_parser().parse_args(["mrc", "--arch", "cifar_resnet20", "--data", "d", "--val-fraction", "0.3",
                                      "--split-seed", "2", "--max-file-mb", "5", "--classes", "cat,1"])
    assert _data_spec(args, None)[0] == DataSpec(name="d", val_fraction=0.3, split_seed=2, max_file_mb=5.0,
                                                 classes=["cat", 1])


@pytest.fixture
def npz(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "train.npz", x=rng.integers(0, 255, (40, 4, 4, 3), np.uint8), y=np.arange(40) % 4)
    return tmp_path / "train.npz"


def test_a_spec_or_its_keys_load_the_same_split(npz):
    spec = load_config(None, [f"data.name={npz}", "data.val_fraction=0.3", "data.split_seed=3"]).data
    by_spec = load_dataset(spec, "val")
    by_keys = load_dataset(npz, "val", val_fraction=0.3, split_seed=3)
    assert len(by_spec) == 12 and torch.equal(by_spec.x, by_keys.x) and torch.equal(by_spec.y, by_keys.y)
    assert len(load_dataset(spec, "val", val_fraction=0.5)) == 20, "a keyword replaces the spec's key"
    assert len(load_dataset(npz, "val")) == round(40 * DataSpec.val_fraction)
    with pytest.raises(TypeError, match="unknown data option.*limits; the options are name, root"):
        load_dataset(npz, "val", limits=None)
    with pytest.raises(UserError, match="data.storage=disk stores image folders"):
        load_dataset(npz, "val", storage="disk")
