"""The evaluate / mrc commands the docs show on the shared reference model, and the README's evaluate / finetune /
pretrain / models commands, run through the CLI as written.

Each command is taken from the docs' code blocks and run with its own flags; the README's named datasets become the
offline copies in ../shared it names, output paths move into a temporary directory and size flags are appended
(argparse keeps the last value; a later --set wins) so the test takes seconds, not minutes."""

import re
import shlex
from pathlib import Path

import pytest

from robustft.cli import main

ROOT = Path(__file__).resolve().parents[1]
DOCS = ["README.md", "docs/methods/rift.md", "bench/results/reference_eval/README.md"]
_TRAIN = ["--epochs", "1"] + [a for kv in ("data.train_n=64", "data.val_n=32", "data.test_n=32", "data.batch_size=32",
                                            "attack.steps=1", "eval.val_steps=1", "eval.test_steps=1")
                              for a in ("--set", kv)]
SMALLER = {"evaluate": ["--n", "20", "--steps", "2"],
           "mrc": ["--n", "16", "--steps", "1", "--attack-steps", "1", "--modules", "conv1,fc"],
           "finetune": _TRAIN, "pretrain": _TRAIN, "models": []}
OUTPUT_FLAGS = ("--json", "--out-dir")
# The README's named datasets and the offline copies of this repository's CI that stand in for them (as it says).
OFFLINE = {"cifar10": "../shared/data/cifar10-jpeg/cifar10-jpeg.zip", "cifar100": "../shared/data/cifar100"}


def documented_commands() -> list[tuple[str, str]]:
    """(doc, command) for every ``robustft evaluate``/``mrc`` line on the shared model in the docs' bash blocks, and
    every evaluate/mrc/finetune/pretrain/models line of the README."""
    found = []
    for doc in DOCS:
        for block in re.findall(r"```bash\n(.*?)```", (ROOT / doc).read_text(), flags=re.S):
            for command in block.replace("\\\n", " ").splitlines():
                command = command.split("  #")[0].strip()
                if (re.match(r"robustft (evaluate|mrc) ", command) and "../shared/" in command
                        or doc == "README.md" and re.match(r"robustft (evaluate|mrc|finetune|pretrain|models)\b",
                                                           command)):
                    found.append((doc, command))
    return found


def offline(argv: list[str]) -> list[str]:
    """``argv`` with each named dataset of ``OFFLINE`` replaced by its offline copy."""
    return [OFFLINE.get(a, a) if i and argv[i - 1] == "--data" else a for i, a in enumerate(argv)]


def test_the_readme_names_the_offline_copies():
    readme = (ROOT / "README.md").read_text()
    assert all(f"`--data {path}`" in readme and f"`--data {name}`" in readme for name, path in OFFLINE.items())
    assert not any("../shared" in command for doc, command in documented_commands() if doc == "README.md")


def test_the_docs_show_the_reference_commands():
    docs = {doc for doc, _ in documented_commands()}
    assert docs == set(DOCS), f"a doc lost its reference-model command: {set(DOCS) - docs}"


@pytest.mark.parametrize("doc,command", documented_commands())
def test_documented_command_runs(doc, command, shared_dir, tmp_path, monkeypatch, capsys):
    argv = [a.replace("../shared", str(shared_dir)) for a in offline(shlex.split(command)[1:])]
    for i, arg in enumerate(argv[:-1]):
        if arg in OUTPUT_FLAGS:
            argv[i + 1] = str(tmp_path / Path(argv[i + 1]).name)
    extra = SMALLER[argv[0]] + (["--aa-version", "custom", "--aa-attacks", "apgd-ce"]
                                if "autoattack" in argv else [])
    if argv[0] in ("finetune", "pretrain"):
        extra += ["--run-dir", str(tmp_path / "run")]
    monkeypatch.chdir(ROOT)
    assert main(argv + extra) == 0, capsys.readouterr().err
    out = capsys.readouterr()
    assert "Traceback" not in out.err and "robustft: error" not in out.err
    assert argv[0] == "models" or any(tmp_path.iterdir()), "the command wrote its output"
