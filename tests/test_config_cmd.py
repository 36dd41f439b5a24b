"""`robustft config`: every key with its type, default, range and help; the docs' key tables are its output.

Run this file (``PYTHONPATH=src python tests/test_config_cmd.py``) to rewrite the generated tables in the docs."""

import contextlib
import dataclasses
import io
import re
import shlex
from pathlib import Path
from typing import Literal

import pytest

from robustft.cli import main
from robustft.engine.config import describe_config, load_config
from robustft.errors import UserError
from robustft.methods import TwinsConfig, list_methods
from robustft.methods.base import method_config
from robustft.schema import describe, from_dict, type_name
from support import error_line

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"<!-- (robustft config[^>]*?): begin -->\n(.*?)<!-- robustft config: end -->", re.S)
REGENERATE = "PYTHONPATH=src python tests/test_config_cmd.py"


def docs() -> list[Path]:
    """Every markdown page that may hold generated tables."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def generated(command: str) -> str:
    """What ``command`` (``robustft config ...``) prints."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(shlex.split(command)[1:]) == 0, command
    return out.getvalue()


def regenerate(text: str) -> str:
    """``text`` with every generated block replaced by the current output of the command its marker names."""
    return BLOCK.sub(lambda m: f"<!-- {m[1]}: begin -->\n{generated(m[1])}<!-- robustft config: end -->", text)


def _row(out: str, key: str) -> str:
    """The printed row of ``key``."""
    return next(line for line in out.splitlines() if line.split()[:1] == [key])


# ---------------------------------------------------------------------------------------------------------------
# the command
# ---------------------------------------------------------------------------------------------------------------
def test_method_options_are_listed_with_their_help(capsys):
    assert main(["config", "--method", "twins"]) == 0
    out = capsys.readouterr().out
    lam = next(f for f in dataclasses.fields(TwinsConfig) if f.name == "lam")
    row = _row(out, "method_args.lam")
    assert lam.metadata["help"] in row and "float" in row and "1.0" in row and ">= 0" in row
    assert "[method_args]" in out and "[optim]" in out and "optim.lr" in out, "the run config's keys come first"
    assert "one of sgd, adamw" in _row(out, "optim.name") and "[0.5, 0.75]" in _row(out, "optim.milestones")


@pytest.mark.parametrize("method,key,default", [("rift", "mrc_n", "512"), ("ranli", "init", "random"),
                                                ("twins_trades", "objective", "trades")])
def test_defaults_are_the_registered_ones(capsys, method, key, default):
    assert main(["config", "--method", method, "--section", "method_args"]) == 0
    out = capsys.readouterr().out
    assert f"  {default}  " in _row(out, f"method_args.{key}")
    assert "data.name" not in out, "--section keeps one section"


@pytest.mark.parametrize("argv,match", [(["--method", "nope"], "unknown method 'nope': choose from"),
                                        (["--section", "nope"], "unknown config section 'nope'"),
                                        (["--section", "method_args"], "give --method")])
def test_bad_arguments_are_one_line(capsys, argv, match):
    assert main(["config", *argv]) == 2
    assert match in error_line(capsys.readouterr().err)


@pytest.mark.parametrize("method,option,message", [
    ("twins", "objective=clean", "config key 'method_args.objective' must be one of pgd, trades, got 'clean'"),
    ("rift", "objective=pgd", "unknown config key(s) method_args.objective; valid under method_args: module,"),
    ("rift", "beta=3", "unknown config key(s) method_args.beta;"),
    ("autolora", "objective=trades", "unknown config key(s) method_args.objective;"),
])
def test_an_option_the_method_does_not_use_is_refused(capsys, method, option, message):
    assert main(["finetune", "--method", method, "--set", f"method_args.{option}"]) == 2
    assert message in error_line(capsys.readouterr().err)


def test_only_methods_that_choose_their_loss_list_objective_and_beta(capsys):
    for method, listed in [("rift", False), ("autolora", False), ("twins", True), ("pgd_at", True), ("roli", True)]:
        assert main(["config", "--method", method, "--section", "method_args"]) == 0
        keys = {line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]}
        assert ("method_args.objective" in keys) is listed, method
    assert main(["config", "--method", "autolora", "--section", "method_args"]) == 0
    assert "method_args.beta" in capsys.readouterr().out, "AutoLoRa's λ2 scale is its beta"


def test_every_key_has_help():
    for method in list_methods():
        missing = [r.key for r in describe_config(method) if not r.help]
        assert not missing, f"{method}: keys without help {missing}"


# ---------------------------------------------------------------------------------------------------------------
# choices are Literal types, checked in one place
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("overrides,message", [
    (["optim.name=lbfgs"], "config key 'optim.name' must be one of sgd, adamw, got 'lbfgs'"),
    (["method=roli", "method_args.peft=prompt"],
     "config key 'method_args.peft' must be one of full, bias, lora, adapter, got 'prompt'"),
    (["eval.test_attacks=[pgd, cw]"], "config key 'eval.test_attacks[1]' must be one of pgd, fgsm, autoattack"),
])
def test_a_bad_choice_names_the_choices(capsys, overrides, message):
    assert main(["finetune", *(a for o in overrides for a in ("--set", o))]) == 2
    assert message in error_line(capsys.readouterr().err)


def test_a_float_key_takes_a_fraction_and_shows_a_long_default_as_one(capsys):
    """attack.eps is a float (8/255 read as the number); a default whose decimal is long prints as the exact fraction
    it is, which the key reads back to the same float."""
    assert main(["config", "--section", "attack"]) == 0
    row = _row(capsys.readouterr().out, "attack.eps")
    assert row.split()[1:3] == ["float", "8/255"] and ">= 0" in row
    assert load_config(None, ["data.crop_ratio=[3/4, 4/3]"]).data.crop_ratio == [3 / 4, 4 / 3]
    assert load_config(None, ["optim.lr=1e-4"]).optim.lr == 1e-4, "a decimal stays a decimal (YAML 1.1 string)"
    with pytest.raises(UserError, match="'optim.lr' must be float, got '1/0'"):
        load_config(None, ["optim.lr=1/0"])


def test_yaml_booleans_read_as_the_choice_they_spell():
    assert load_config(None, ["train.amp=off"]).train.amp == "off", "YAML 1.1 reads `off` as false"
    with pytest.raises(UserError, match="one of auto, new, keep, got True"):
        load_config(None, ["model.head=yes"])


def test_describe_reads_annotations_and_metadata():
    @dataclasses.dataclass
    class Inner:
        mode: Literal["a", "b"] = dataclasses.field(default="a", metadata={"help": "the mode"})

    @dataclasses.dataclass
    class Outer:
        rate: float | None = dataclasses.field(default=None, metadata={"help": "a rate", "gt": 0, "le": 1})
        names: list[str] = dataclasses.field(default_factory=lambda: ["x"], metadata={"help": "names"})
        inner: Inner = dataclasses.field(default_factory=Inner)

    rows = {r.key: r for r in describe(Outer)}
    assert list(rows) == ["rate", "names", "inner.mode"]
    assert (rows["rate"].type, rows["rate"].default, rows["rate"].range) == ("float | None", None, "> 0 and <= 1")
    assert (rows["names"].type, rows["inner.mode"].type, rows["inner.mode"].section) == ("list[str]", "one of a, b",
                                                                                         "inner")
    assert type_name(tuple[float, float]) == "[float, float]"
    assert from_dict(Outer, {"inner": {"mode": "b"}}).inner.mode == "b"
    assert {r.key: r.default for r in describe(method_config("ranli", {}))}["init"] == "random", "an instance's values"


# ---------------------------------------------------------------------------------------------------------------
# the docs' tables are generated
# ---------------------------------------------------------------------------------------------------------------
def test_docs_tables_match_the_command():
    for doc in docs():
        text = doc.read_text()
        assert regenerate(text) == text, (f"{doc.relative_to(ROOT)}: a generated `robustft config` table is out of "
                                          f"date; rewrite the tables with `{REGENERATE}`")


def test_docs_hold_the_run_config_and_every_method():
    commands = {m[1]: doc for doc in docs() for m in BLOCK.finditer(doc.read_text())}
    assert commands.get("robustft config --format markdown") == ROOT / "docs" / "training.md"
    documented = {type(method_config(shlex.split(c)[shlex.split(c).index("--method") + 1], {}))
                  for c in commands if "--method" in c}
    missing = [m for m in list_methods() if type(method_config(m, {})) not in documented]
    assert not missing, f"no generated options table in docs/ for the config of {missing}"


if __name__ == "__main__":
    for page in docs():
        before = page.read_text()
        after = regenerate(before)
        if after != before:
            page.write_text(after)
            print(f"rewrote {page.relative_to(ROOT)}")
