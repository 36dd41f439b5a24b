"""Config loading: YAML + overrides, validation with clear messages."""

import pytest
import yaml

from robustft.engine import RunConfig, apply_overrides, from_dict, load_config, to_dict
from robustft.errors import UserError


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("method: trades\ndata: {name: cifar100, batch_size: 64}\noptim: {lr: 0.1, milestones: [30, 50]}\n")
    cfg = load_config(path, ["optim.lr=0.003", "train.epochs=3", "method_args.beta=3", "attack.eps=4/255"])
    assert cfg.method == "trades" and cfg.data.name == "cifar100" and cfg.data.batch_size == 64
    assert cfg.optim.lr == 0.003 and cfg.optim.milestones == [30.0, 50.0] and cfg.train.epochs == 3
    assert cfg.method_args == {"beta": 3} and cfg.attack.eps == 4 / 255 and type(cfg.attack.eps) is float


def test_eps_is_a_number_once_loaded_and_older_saved_strings_still_load(tmp_path):
    """attack.eps / attack.step_size are read as a number or a fraction and held as the number, so nothing parses
    them later; a config or card saved as "8/255" by an older version loads to the same float (and resumes)."""
    from robustft.engine.run import _same_config

    cfg = load_config(None, ["data.name=x", "attack.step_size=2/255"])
    assert (cfg.attack.eps, cfg.attack.step_size) == (8 / 255, 2 / 255) and type(cfg.attack.eps) is float
    saved = to_dict(cfg)
    assert saved["attack"]["eps"] == 8 / 255, "a saved config writes the number"
    older = {**saved, "attack": {**saved["attack"], "eps": "8/255", "step_size": "2/255"}}
    assert from_dict(RunConfig, older) == cfg
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(older))
    assert _same_config(path, cfg), "a run started with eps '8/255' resumes under the float"
    assert load_config(None, ["attack.eps=0.03"]).attack.eps == 0.03
    with pytest.raises(UserError, match="'attack.eps' must be float, got '8//255'"):
        load_config(None, ["attack.eps=8//255"])
    with pytest.raises(UserError, match="'attack.step_size' must be > 0"):
        load_config(None, ["attack.step_size=0"])


def test_round_trip():
    cfg = load_config(None, ["data.name=x", "model.arch=cifar_resnet20"])
    assert from_dict(RunConfig, to_dict(cfg)) == cfg


@pytest.mark.parametrize("overrides,match", [
    (["optim.lrr=0.1"], "unknown config key.*optim.lrr"),
    (["optim.lr=fast"], "optim.lr.*float"),
    (["train.epochs=2.5"], "train.epochs.*int"),
    (["optim.name=lbfgs"], "optim.name"),
    (["optim.warmup_start=0"], r"optim.warmup_start.*> 0 .*warm-up starts at lr\*warmup_start"),
    (["data.val_fraction=0"], "data.val_fraction.*carved out for validation"),
    (["nonsense"], "section.key=value"),
    (["eval.select=test_acc"], "eval.select"),
    (["model.normalization=imagenette"], "model.normalization: bad normalization 'imagenette'"),
    (["model.normalization=0.5,0.5/1,1"], "model.normalization: bad normalization"),
])
def test_bad_values_are_user_errors(overrides, match):
    with pytest.raises(UserError, match=match):
        load_config(None, overrides)


def test_missing_or_bad_file(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(bad)


def test_apply_overrides_nests():
    assert apply_overrides({}, ["a.b.c=1", "a.d=[1, 2]"]) == {"a": {"b": {"c": 1}, "d": [1, 2]}}


def test_extends_lays_a_file_over_its_base(tmp_path):
    (tmp_path / "base").mkdir()
    base = "method: trades\nmethod_args: {beta: 3}\noptim: {lr: 0.1, momentum: 0.5}\n"
    (tmp_path / "base" / "b.yaml").write_text(base)
    (tmp_path / "c.yaml").write_text("extends: base/b.yaml\noptim: {lr: 0.01}\ndata: {name: cifar100}\n")
    cfg = load_config(tmp_path / "c.yaml", ["optim.momentum=0.8"])
    assert cfg.method == "trades" and cfg.method_args == {"beta": 3} and cfg.data.name == "cifar100"
    assert cfg.optim.lr == 0.01 and cfg.optim.momentum == 0.8
    (tmp_path / "d.yaml").write_text("extends: c.yaml\nmethod: pgd_at\nmethod_args: null\noptim: {momentum: null}\n")
    cfg = load_config(tmp_path / "d.yaml")
    assert cfg.method == "pgd_at" and cfg.method_args == {} and cfg.optim.momentum == 0.9 and cfg.optim.lr == 0.01


@pytest.mark.parametrize("files,match", [
    ({"a.yaml": "extends: b.yaml\n", "b.yaml": "extends: a.yaml\n"}, "extends itself through"),
    ({"a.yaml": "extends: a.yaml\n"}, "extends itself through"),
    ({"a.yaml": "extends: missing.yaml\n"}, r"missing.yaml does not exist \(extended by"),
    ({"a.yaml": "extends: [b.yaml]\n"}, "extends must be a file name"),
])
def test_bad_extends_is_a_user_error(tmp_path, files, match):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(UserError, match=match):
        load_config(tmp_path / "a.yaml")
