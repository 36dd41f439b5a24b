"""The evaluate / mrc commands the docs show on the shared reference model run through the CLI as written.

Each command is taken from the docs' code blocks and run with its own flags; only output paths move into a temporary
directory and size flags are appended (argparse keeps the last value) so the test takes seconds, not minutes."""

import re
import shlex
from pathlib import Path

import pytest

from robustft.cli import main

ROOT = Path(__file__).resolve().parents[1]
DOCS = ["README.md", "docs/methods/rift.md", "bench/results/reference_eval/README.md"]
SMALLER = {"evaluate": ["--n", "20", "--steps", "2"],
           "mrc": ["--n", "16", "--steps", "1", "--attack-steps", "1", "--modules", "conv1,fc"]}
OUTPUT_FLAGS = ("--json", "--out-dir")


def documented_commands() -> list[tuple[str, str]]:
    """(doc, command) for every ``robustft evaluate``/``mrc`` line on the shared model in the docs' bash blocks."""
    found = []
    for doc in DOCS:
        for block in re.findall(r"```bash\n(.*?)```", (ROOT / doc).read_text(), flags=re.S):
            for command in block.replace("\\\n", " ").splitlines():
                command = command.split("  #")[0].strip()
                if re.match(r"robustft (evaluate|mrc) ", command) and "../shared/" in command:
                    found.append((doc, command))
    return found


def test_the_docs_show_the_reference_commands():
    docs = {doc for doc, _ in documented_commands()}
    assert docs == set(DOCS), f"a doc lost its reference-model command: {set(DOCS) - docs}"


@pytest.mark.parametrize("doc,command", documented_commands())
def test_documented_command_runs(doc, command, shared_dir, tmp_path, monkeypatch, capsys):
    argv = shlex.split(command.replace("../shared", str(shared_dir)))[1:]
    for i, arg in enumerate(argv[:-1]):
        if arg in OUTPUT_FLAGS:
            argv[i + 1] = str(tmp_path / Path(argv[i + 1]).name)
    extra = SMALLER[argv[0]] + (["--aa-version", "custom", "--aa-attacks", "apgd-ce"]
                                if "autoattack" in argv else [])
    monkeypatch.chdir(ROOT)
    assert main(argv + extra) == 0, capsys.readouterr().err
    out = capsys.readouterr()
    assert "Traceback" not in out.err and "robustft: error" not in out.err
    assert any(tmp_path.iterdir()), "the command wrote its output"
