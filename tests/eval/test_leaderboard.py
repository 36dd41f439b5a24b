"""`robustft evaluate --leaderboard-json`: a RobustBench model_info record (its field names and formats: percent
strings with two decimals, eps as given) of the same evaluation --json records, plus robustft's provenance."""

import json

from robustft.cli import main
from support import error_line

AUTOATTACK = ("--attack", "autoattack", "--aa-version", "custom", "--aa-attacks", "apgd-ce")
# the fields of RobustBench's model_info/<dataset>/<threat_model>/<model>.json files (robustbench/utils.py ModelInfo)
ROBUSTBENCH_FIELDS = ["link", "name", "authors", "additional_data", "number_forward_passes", "dataset", "venue",
                      "architecture", "eps", "clean_acc", "reported", "autoattack_acc", "footnote"]


def _evaluate(npz_data, ckpt, *extra: str) -> int:
    return main(["evaluate", "--arch", "cifar_resnet20", "--checkpoint", str(ckpt), "--data", str(npz_data),
                 "--eps", "8/255", *extra])


def test_leaderboard_json_matches_the_evaluation(tmp_path, npz_data, ckpt):
    board, full = tmp_path / "board.json", tmp_path / "full.json"
    assert _evaluate(npz_data, ckpt, *AUTOATTACK, "--leaderboard-json", str(board), "--json", str(full)) == 0
    rec, res = json.loads(board.read_text()), json.loads(full.read_text())
    assert list(rec)[:len(ROBUSTBENCH_FIELDS)] == ROBUSTBENCH_FIELDS, "RobustBench's fields first, in its order"
    assert rec["clean_acc"] == str(round(res["clean_acc"] * 100, 2))
    assert rec["autoattack_acc"] == str(round(res["robust_acc"]["autoattack"] * 100, 2))
    assert rec["eps"] == "8/255" and abs(rec["eps_value"] - 8 / 255) < 1e-9
    assert (rec["threat_model"], rec["norm"], rec["n_ex"]) == ("Linf", "linf", 20)
    assert (rec["dataset"], rec["architecture"], rec["split"]) == (str(npz_data), "cifar_resnet20", "test")
    assert rec["autoattack_version"] == "custom" and rec["autoattack_attacks"] == ["apgd-ce"]
    assert rec["versions"]["torch"] and rec["versions"]["autoattack"] and rec["versions"]["robustft"]
    assert rec["number_forward_passes"] == 1 and rec["link"] is None


def test_leaderboard_json_needs_autoattack(tmp_path, npz_data, ckpt, capsys):
    board = tmp_path / "board.json"
    assert _evaluate(npz_data, ckpt, "--attack", "pgd", "--leaderboard-json", str(board)) == 2
    assert "--attack autoattack" in error_line(capsys.readouterr().err)
    assert not board.exists()
