"""scripts/setup.sh with a fake interpreter on PATH that records every call: what reaches pip, and what it says."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CU128 = "https://download.pytorch.org/whl/cu128"

# A stand-in for python3 and for the venv's python: `-m venv DIR` makes DIR/bin/python (itself), `-c "import torch..."`
# prints $FAKE_TORCH (fails when empty: no torch), anything else (pip) only appends its arguments to $FAKE_LOG.
FAKE = f"""#!{sys.executable}
import json, os, shutil, sys
args = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps(args) + "\\n")
if args[:2] == ["-m", "venv"]:
    if os.environ.get("FAKE_NO_VENV"):
        sys.exit("The virtual environment was not created successfully because ensurepip is not available.")
    os.makedirs(os.path.join(args[2], "bin"))
    shutil.copy(__file__, os.path.join(args[2], "bin", "python"))
elif args[:1] == ["-c"] and "import torch" in args[1]:
    if not os.environ.get("FAKE_TORCH"):
        sys.exit(1)
    print(os.environ["FAKE_TORCH"])
"""


def run_setup(tmp_path: Path, torch_installed: str = "", **env: str) -> tuple[subprocess.CompletedProcess, list]:
    """Run scripts/setup.sh with the fake interpreter; (the process, the pip argument lists it received)."""
    fake = tmp_path / "python3"
    fake.write_text(FAKE)
    fake.chmod(0o755)
    log = tmp_path / "calls.jsonl"
    log.write_text("")
    venv = tmp_path / "venv"
    if torch_installed:  # a venv made earlier
        (venv / "bin").mkdir(parents=True)
        (venv / "bin" / "python").write_text(FAKE)
        (venv / "bin" / "python").chmod(0o755)
    base = {k: v for k, v in os.environ.items() if not k.startswith("ROBUSTFT_TORCH")}
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "setup.sh"), "test"], capture_output=True, text=True,
                          env={**base, "PYTHON": str(fake), "ROBUSTFT_VENV": str(venv), "FAKE_LOG": str(log),
                               "FAKE_TORCH": torch_installed, **env}, timeout=60)
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    return proc, [c[2:] for c in calls if c[:2] == ["-m", "pip"]]


def torch_installs(pip_calls: list) -> list:
    """The pip install calls that install torch."""
    return [c for c in pip_calls if c[0] == "install" and any(a.startswith("torch") for a in c)]


def test_default_installs_the_pinned_torch_then_robustft(tmp_path):
    proc, pip = run_setup(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert torch_installs(pip) == [["install", "-q", "--disable-pip-version-check", "torch==2.13.0"]]
    assert pip[-1][-2:] == ["-e", f"{ROOT}[test]"]


def test_a_cuda_spec_reaches_pip_as_separate_arguments(tmp_path):
    proc, pip = run_setup(tmp_path, ROBUSTFT_TORCH_SPEC=f"torch==2.13.0 --index-url {CU128}")
    assert proc.returncode == 0, proc.stderr
    assert torch_installs(pip)[0][-3:] == ["torch==2.13.0", "--index-url", CU128]


def test_an_index_variable_becomes_index_url(tmp_path):
    proc, pip = run_setup(tmp_path, ROBUSTFT_TORCH_INDEX="https://download.pytorch.org/whl/cpu")
    assert proc.returncode == 0, proc.stderr
    assert torch_installs(pip)[0][-3:] == ["torch==2.13.0", "--index-url", "https://download.pytorch.org/whl/cpu"]


def test_a_differing_request_is_said_and_the_torch_kept(tmp_path):
    proc, pip = run_setup(tmp_path, "2.13.0+cpu", ROBUSTFT_TORCH_SPEC=f"torch==2.13.0 --index-url {CU128}")
    assert proc.returncode == 0, proc.stderr
    assert torch_installs(pip) == []
    assert "keeping torch 2.13.0+cpu" in proc.stdout and "ROBUSTFT_TORCH_REINSTALL=1" in proc.stdout


@pytest.mark.parametrize("installed,spec", [("2.13.0+cpu", "torch==2.13.0"), ("2.13.0+cu128", f"torch==2.13.0 "
                                                                                              f"--index-url {CU128}")])
def test_a_matching_torch_is_kept_silently(tmp_path, installed, spec):
    proc, pip = run_setup(tmp_path, installed, ROBUSTFT_TORCH_SPEC=spec)
    assert proc.returncode == 0 and torch_installs(pip) == []
    assert "torch" not in proc.stdout


def test_reinstall_replaces_a_differing_torch(tmp_path):
    proc, pip = run_setup(tmp_path, "2.12.0+cpu", ROBUSTFT_TORCH_REINSTALL="1")
    assert proc.returncode == 0, proc.stderr
    assert ["uninstall", "-q", "-y", "torch"] in pip
    assert torch_installs(pip)[-1][-1] == "torch==2.13.0"
    assert pip.index(["uninstall", "-q", "-y", "torch"]) < pip.index(torch_installs(pip)[-1])


def test_a_missing_venv_module_names_the_package(tmp_path):
    proc, pip = run_setup(tmp_path, FAKE_NO_VENV="1")
    assert proc.returncode != 0 and pip == []
    assert "python3-venv" in proc.stderr
    assert not (tmp_path / "venv").exists()
