"""Benchmark protocols: the grid runs, cells reference each other, finished cells are reused, a lost cell is redone
to the same numbers, variants of a method are selected on validation only, the report aggregates over seeds and
checks claims, and every shipped protocol builds."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from robustft.bench import (
    Claim,
    aggregate,
    cell_config,
    cell_dir,
    check_claims,
    list_protocols,
    load_protocol,
    run_protocol,
    select_variants,
    slug,
    write_protocol_report,
)
from robustft.bench.report import protocol_plots
from robustft.cli import main
from robustft.engine import load_config, to_dict
from robustft.errors import UserError
from robustft.report.tables import curve_columns
from support import robustft_cmd, run_env

ROOT = Path(__file__).resolve().parents[2]
TINY = {
    "name": "tiny", "description": "a tiny grid", "seeds": [0, 1],
    "tasks": {"t": {
        "title": "tiny task",
        "config": {"data": {"name": "{data}", "val_fraction": 0.2, "batch_size": 32},
                   "model": {"arch": "cifar_resnet20", "checkpoint": "{models}/source.pt", "options": {"width": 4}},
                   "attack": {"steps": 2}, "optim": {"lr": 0.05},
                   "eval": {"val_steps": 2, "test_steps": 2, "corruptions": ["gaussian_noise"],
                            "corruption_severities": [1]},
                   "train": {"epochs": 1}},
        "autoattack": {"n": 8, "version": "custom", "attacks": ["apgd-ce"], "seeds": [0]},
        "cells": {"adv_linear_probe": {"method": "adv_linear_probe"},
                  "roli bias": {"method": "roli", "set": {"method_args.peft": "bias",
                                                          "model.init_head": "{cell:adv_linear_probe}"}}}}},
    "claims": [{"claim": "roli beats the probe", "task": "t", "better": ["roli bias"], "than": ["adv_linear_probe"],
                "metrics": ["clean", "autoattack"]}],
}


def _write(tmp_path: Path, data: dict, name: str = "tiny.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return path


def _numbers(rows: list[dict]) -> list[dict]:
    """Rows without their timings and time stamps (which differ between invocations)."""
    return [{k: v for k, v in r.items() if not k.endswith(("_s", "_per_s", "_utc"))} for r in rows]


def _files(out: Path) -> dict[Path, int]:
    """Every results/AutoAttack file of the cells with its modification time."""
    return {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("*.json") if p.name.startswith(("results", "auto"))}


def test_grid_runs_reuses_and_redoes_a_lost_cell(tiny_task, tmp_path):
    root, _ = tiny_task
    protocol = load_protocol(_write(tmp_path, TINY))
    roots = {"data": str(root), "models": str(root)}
    out = tmp_path / "out"
    first = run_protocol(protocol, out, roots, log=lambda s: None)
    assert [(r["label"], r["seed"]) for r in first["rows"]] == [
        ("adv_linear_probe", 0), ("roli bias", 0), ("adv_linear_probe", 1), ("roli bias", 1)]
    # {cell:...} is the same seed's probe; AutoAttack only for the listed seed, cached beside the run
    cfg = yaml.safe_load((cell_dir(out, "t", "roli bias", 1) / "config.yaml").read_text())
    assert cfg["model"]["init_head"] == str(cell_dir(out, "t", "adv_linear_probe", 1))
    assert [("test_autoattack" in r) for r in first["rows"]] == [True, True, False, False]
    assert (cell_dir(out, "t", "roli bias", 0) / "autoattack_n8.json").is_file()
    for row in first["rows"]:
        results = json.loads((Path(row["run_dir"]) / "results.json").read_text())
        assert row["test_clean"] == results["test"]["clean_acc"]
        assert row["test_pgd"] == results["test"]["robust_acc"]["pgd2"] and row["pgd_name"] == "pgd2"
        assert row["test_corruption"] == results["test_corruptions"]["mean"]
        assert row["selected"] and row["group"] == row["label"]  # ungrouped cells: each its own group
    aa = json.loads((cell_dir(out, "t", "roli bias", 0) / "autoattack_n8.json").read_text())
    assert (first["rows"][1]["test_autoattack"], first["rows"][1]["aa_subset_pgd"]) == (
        aa["robust_acc"]["autoattack"], aa["robust_acc"]["pgd2"])
    before = _files(out)
    assert _numbers(run_protocol(protocol, out, roots, log=lambda s: None)["rows"]) == _numbers(first["rows"])
    assert _files(out) == before  # nothing recomputed
    # a cell that never finished (results and AutoAttack file gone): only it runs again, to the same numbers
    lost = cell_dir(out, "t", "roli bias", 0)
    (lost / "results.json").unlink()
    (lost / "autoattack_n8.json").unlink()
    again = run_protocol(protocol, out, roots, log=lambda s: None)
    assert _numbers(again["rows"]) == _numbers(first["rows"])
    changed = {p for p, t in _files(out).items() if before.get(p) != t}
    assert changed == {lost / "results.json", lost / "autoattack_n8.json"}


def _row(label: str, seed: int, val: float, test: float, group: str | None = None) -> dict:
    """A constructed report row: validation robust ``val``, test clean/PGD/AutoAttack all ``test``."""
    return {"task": "t", "label": label, "group": group or label, "method": "m", "seed": seed, "val_clean": 0.5,
            "val_robust": val, "test_clean": test, "test_pgd": test, "test_autoattack": test, "n_autoattack": 100,
            "n_test": 1000, "pgd_name": "pgd20"}


def test_a_group_is_its_best_validation_variant_never_the_best_test_one():
    # seed 0: "lr=0.01" has the better validation score but the worse test numbers; seed 1: the other way round
    rows = select_variants([_row("pgd_at lr=0.05", 0, 0.30, 0.60, "pgd_at"), _row("pgd_at lr=0.01", 0, 0.35, 0.40,
                                                                                  "pgd_at"),
                            _row("baseline", 0, 0.10, 0.50),
                            _row("pgd_at lr=0.05", 1, 0.40, 0.45, "pgd_at"), _row("pgd_at lr=0.01", 1, 0.20, 0.70,
                                                                                  "pgd_at"),
                            _row("baseline", 1, 0.10, 0.50)], "robust_acc")
    assert [r["selected"] for r in rows] == [False, True, True, True, False, True]
    group = next(g for g in aggregate(rows, groups=True) if g["label"] == "pgd_at")
    assert group["variants"] == ["pgd_at lr=0.01", "pgd_at lr=0.05"] and group["test_clean"] == pytest.approx(0.425)
    assert [e["selected_seeds"] for e in aggregate(rows)] == [[1], [0], [0, 1]]
    claim = check_claims([Claim("pgd_at beats the baseline", "t", ["pgd_at"], ["baseline"], ["clean"])], rows)[0]
    # by validation: 0.40 − 0.50 and 0.45 − 0.50 (by test it would have been +0.10 and +0.20)
    assert claim["metrics"]["clean"]["per_seed"] == {0: pytest.approx(-0.10), 1: pytest.approx(-0.05)}
    assert claim["verdict"] == "inconclusive" and "no per-image flags" in claim["metrics"]["clean"]["why"]
    named = check_claims([Claim("one variant", "t", ["pgd_at lr=0.05"], ["baseline"], ["clean"])], rows)[0]
    assert named["metrics"]["clean"]["per_seed"] == {0: pytest.approx(0.10), 1: pytest.approx(-0.05)}
    by_clean = select_variants(rows[3:5], "sum")  # equal val_clean: sum ranks as robust does
    assert [r["selected"] for r in by_clean] == [True, False]


def test_grouped_protocol_attacks_only_the_selected_variants(tiny_task, tmp_path, capsys):
    root, _ = tiny_task
    spec = {"name": "grid", "description": "an lr grid", "seeds": [0], "tasks": {"t": {
        "title": "tiny", "config": {**TINY["tasks"]["t"]["config"], "eval": {"val_steps": 1, "test_steps": 1}},
        "autoattack": {**TINY["tasks"]["t"]["autoattack"], "selected_only": True, "seeds": None},
        "cells": {"lr=0.05": {"method": "standard", "group": "standard"},
                  "lr=0.001": {"method": "standard", "group": "standard", "set": {"optim.lr": 0.001}},
                  "probe": {"method": "adv_linear_probe"}}}},
        "claims": [{"claim": "fine-tuning beats probing", "task": "t", "better": ["standard"], "than": ["probe"],
                    "metrics": ["clean", "autoattack"]}]}
    out = tmp_path / "out"
    assert main(["bench", "--protocol", str(_write(tmp_path, spec, "grid.yaml")), "--data-root", str(root),
                 "--models-root", str(root), "--out", str(out)]) == 0
    record = json.loads((out / "results.json").read_text())
    rows = {r["label"]: r for r in record["rows"]}
    later_wins = rows["lr=0.001"]["val_robust"] > rows["lr=0.05"]["val_robust"]  # the first listed wins a tie
    best, other = ("lr=0.001", "lr=0.05") if later_wins else ("lr=0.05", "lr=0.001")
    assert rows[best]["selected"] and not rows[other]["selected"] and rows["probe"]["selected"]
    attacked = {p.parent.parent.name for p in (out / "runs").rglob("autoattack_n8.json")}
    assert attacked == {slug(best), "probe"} and "test_autoattack" not in rows[other]
    assert [g["variants"] for g in record["groups"]] == [[best], ["probe"]]
    text = (out / "results.md").read_text()
    assert f"| standard | 0: {best} |" in text and "selected for seeds" in text
    assert "wrote" in capsys.readouterr().out


def _flags(n_ones: int, n: int = 400, shift: int = 0) -> str:
    """n per-image flags, ``n_ones`` of them correct, starting at image ``shift`` (wrapping)."""
    return "".join("1" if (i - shift) % n < n_ones else "0" for i in range(n))


def test_report_aggregates_and_checks_claims_on_paired_per_image_intervals():
    # a: 60% / 70% clean per seed, b: 40% / 50%, on 400 shared images; PGD: a and b right on the same images
    spec = [("a", 0, 240, 100, 0.1), ("a", 1, 280, 120, None), ("b", 0, 160, 100, 0.15), ("b", 1, 200, 120, None)]
    rows = [{"task": "t", "label": lab, "group": lab, "selected": True, "method": lab, "seed": s,
             "test_clean": c / 400, "test_pgd": p / 400, "n_test": 400, "pgd_name": "pgd20",
             "samples": {"clean": _flags(c), "pgd": _flags(p)},
             **({"test_autoattack": aa, "n_autoattack": 10} if aa is not None else {})}
            for lab, s, c, p, aa in spec]
    table = aggregate(rows)
    a = table[0]
    assert a["test_clean"] == pytest.approx(0.65) and a["test_clean_spread"] == pytest.approx(0.05)
    assert a["test_autoattack_n"] == 1 and a["seeds"] == [0, 1]
    claims = check_claims([Claim("a cleaner", "t", ["a"], ["b"], ["clean"]),
                           Claim("b cleaner", "t", ["b"], ["a"], ["clean"]),
                           Claim("a more robust", "t", ["a"], ["b"], ["pgd", "autoattack"]),
                           Claim("a as robust", "t", ["a"], ["b"], ["pgd"], tolerance=0.01),
                           Claim("a as clean", "t", ["a"], ["b"], ["clean"], tolerance=0.01)], rows)
    assert [c["verdict"] for c in claims] == ["held", "contradicted", "inconclusive", "held", "contradicted"]
    clean = claims[0]["metrics"]["clean"]
    assert clean["per_seed"] == {0: pytest.approx(0.2), 1: pytest.approx(0.2)}
    # per image, a − b averaged over the seeds: 0.5 on images 160–199 and 240–279 (one seed), 1 on 200–239 (both),
    # 0 elsewhere: mean 0.2, variance (80·0.25 + 40)/400 − 0.2² = 0.11 (times 400/399, the sample variance)
    half = 1.959964 * (0.11 * 400 / 399) ** 0.5 / 400 ** 0.5
    assert clean["paired"]["ci95"] == [pytest.approx(0.2 - half), pytest.approx(0.2 + half)]
    pgd, aa = claims[2]["metrics"]["pgd"], claims[2]["metrics"]["autoattack"]
    assert pgd["paired"]["ci95"] == [0.0, 0.0] and pgd["verdict"] == "inconclusive"
    assert aa["difference"] == pytest.approx(-0.05) and "paired" not in aa, "no AutoAttack flags: no interval"


def test_report_files_state_the_claims(tiny_task, tmp_path):
    root, _ = tiny_task
    protocol = load_protocol(_write(tmp_path, {**TINY, "seeds": [0]}))
    record = run_protocol(protocol, tmp_path / "out", {"data": str(root), "models": str(root)}, log=lambda s: None)
    record.update(seeds=[0], command="robustft bench --protocol tiny.yaml", cells_wall_s=1.0,
                  provenance={"platform": "p", "cpu_count": 2, "python": "3", "torch": "t"})
    written = write_protocol_report(protocol, record, tmp_path / "report")
    names = {p.name for p in written}
    assert {"results.json", "results.md", "t_clean_vs_robust.png", "t_training_curves.png"} <= names
    text = (tmp_path / "report" / "results.md").read_text()
    report = json.loads((tmp_path / "report" / "results.json").read_text())
    claim = report["claims"][0]
    assert "roli beats the probe: roli bias vs adv_linear_probe | clean: " in text
    paired = claim["metrics"]["clean"]["paired"]
    assert paired["n"] == report["rows"][0]["n_test"] == 48, "cells write per-image flags the report pairs"
    row = report["rows"][1]
    assert row["samples"]["clean"].count("1") == round(row["test_clean"] * 48)
    assert len(row["samples"]["autoattack"]) == 8, "the AutoAttack subset's flags come with its record"
    assert f"**{claim['verdict']}**" in text
    assert "selected for seeds" not in text  # no variant groups: no selection column
    for row in report["rows"]:  # each trained cell's curve is in results.json, as its run wrote it
        history = [json.loads(line) for line in Path(row["metrics"]).read_text().splitlines()]
        assert row["curve"] == curve_columns(history) and row["best_epoch"] in row["curve"]["epoch"]
        assert set(row["curve"]) == {"epoch", "lr", "train_loss", "val_clean_acc", "val_robust_acc"}
    shutil.rmtree(tmp_path / "out")
    again = protocol_plots(report["task_titles"], report["rows"], tmp_path)
    assert [p.name for p in again] == ["t_clean_vs_robust.png", "t_training_curves.png"], "no run directory needed"


def test_protocol_errors(tmp_path):
    assert "cpu-small" in list_protocols()
    task = TINY["tasks"]["t"]
    with pytest.raises(UserError, match="neither an earlier cell of task t"):
        backwards = dict(reversed(task["cells"].items()))
        load_protocol(_write(tmp_path, {**TINY, "tasks": {"t": {**task, "cells": backwards}}}))
    with pytest.raises(UserError, match="unknown cells/metrics"):
        load_protocol(_write(tmp_path, {**TINY, "claims": [{**TINY["claims"][0], "metrics": ["speed"]}]}))
    clash = {"a": {"method": "standard", "group": "b"}, "b": {"method": "standard"}}
    with pytest.raises(UserError, match=r"\['b'\] to more than one cell, group or source row"):
        load_protocol(_write(tmp_path, {**TINY, "claims": [], "tasks": {"t": {**task, "cells": clash}}}))
    grouped_source = {"a": {"method": "rift", "group": "g", "source_row": "before"}}
    with pytest.raises(UserError, match="cannot report a source_row"):
        load_protocol(_write(tmp_path, {**TINY, "claims": [], "tasks": {"t": {**task, "cells": grouped_source}}}))
    with pytest.raises(UserError, match="must be one of robust_acc, clean_acc, sum"):
        load_protocol(_write(tmp_path, {**TINY, "tasks": {"t": {**task, "select": "test_acc"}}}))
    with pytest.raises(UserError, match="unknown protocol"):
        load_protocol("cpu-huge")
    proc = subprocess.run(robustft_cmd("bench", "--protocol", "cpu-small", "--data-root", str(tmp_path / "none")),
                          env=run_env(), capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "--data-root" in proc.stderr
    proc = subprocess.run(robustft_cmd("bench", "--protocol", "cpu-small", "--seeds", "0,x"), env=run_env(),
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "comma list of integers" in proc.stderr


def test_a_null_grid_value_is_none(tmp_path):
    """A grid's values are set as the YAML values they are: null is None (made a KEY=VALUE string, it was the string
    'None'); the variant's label and run directory are named as before."""
    cells = {"size": {"method": "standard", "grid": {"data.image_size": [None, 16]}}}
    protocol = load_protocol(_write(tmp_path, {**TINY, "claims": [], "tasks": {"t": {**TINY["tasks"]["t"],
                                                                                     "cells": cells}}}))
    roots = {"data": "/d", "models": "/m"}
    assert list(protocol.tasks["t"].cells) == ["size image_size=None", "size image_size=16"]
    assert cell_config(protocol, "t", "size image_size=None", 0, Path("/o"), roots).data.image_size is None
    assert cell_config(protocol, "t", "size image_size=16", 0, Path("/o"), roots).data.image_size == 16
    assert cell_dir(Path("/o"), "t", "size image_size=None", 0) == Path("/o/runs/t/size_image_size_None/seed0")


def test_the_older_list_of_key_value_strings_still_loads_to_the_same_cells(tmp_path):
    """A protocol in the older form (as bench/evidence_estimate.py reads the committed evidence.yaml back from git):
    each KEY=VALUE is parsed as --set parses it (null: None), placeholders kept; the cells are the mapping form's."""
    path = "{data}/c"
    mapping = {"adv_linear_probe": {"method": "adv_linear_probe", "set": {"optim.weight_decay": 1.0e-3}},
               "roli bias": {"method": "roli", "set": {"method_args.peft": "bias", "data.classes": [0, "c1"],
                                                       "model.init_head": "{cell:adv_linear_probe}",
                                                       "model.checkpoint": path}}}
    listed = {"adv_linear_probe": {"method": "adv_linear_probe", "set": ["optim.weight_decay=1.0e-3"]},
              "roli bias": {"method": "roli", "set": ["method_args.peft=bias", "data.classes=[0, c1]",
                                                      "model.init_head={cell:adv_linear_probe}",
                                                      f"model.checkpoint={path}"]}}
    task = TINY["tasks"]["t"]
    new, old = (load_protocol(_write(tmp_path, {**TINY, "tasks": {"t": {**task, "cells": cells, "bn_stats": bn}}},
                                     f"{name}.yaml"))
                for name, cells, bn in (("new", mapping, {"32 px": {"data.image_size": None}}),
                                        ("old", listed, {"32 px": ["data.image_size=null"]})))
    assert old.tasks["t"].cells["roli bias"].set == mapping["roli bias"]["set"]
    assert old.tasks["t"].bn_stats == new.tasks["t"].bn_stats == {"32 px": {"data.image_size": None}}
    roots = {"data": "/d #1", "models": "/m"}  # parsed after substituting, the older form cut a root at ' #'
    for label in mapping:
        assert cell_config(old, "t", label, 1, Path("/o"), roots) == cell_config(new, "t", label, 1, Path("/o"), roots)
    assert cell_config(old, "t", "roli bias", 1, Path("/o"), roots).model.checkpoint == "/d #1/c"
    with pytest.raises(UserError, match="must look like section.key=value"):
        bad = {"a": {"method": "standard", "set": ["optim.lr"]}}
        load_protocol(_write(tmp_path, {**TINY, "claims": [], "tasks": {"t": {**task, "cells": bad}}}, "bad.yaml"))


def test_a_bn_stats_record_of_the_older_form_is_reused_when_it_names_its_data(tmp_path):
    """A batch-norm statistics record written when bn_stats overrides were KEY=VALUE lists still counts as done when
    it names the data it measured; one that does not is measured again."""
    from robustft.bench.protocol import task_config
    from robustft.bench.runner import _bn_stats

    bn = {"this data": {}, "32 px": {"data.image_size": None}}
    protocol = load_protocol(_write(tmp_path, {**TINY, "tasks": {"t": {**TINY["tasks"]["t"], "bn_stats": bn}}}))
    roots = {"data": str(tmp_path / "none"), "models": str(tmp_path / "none")}  # measuring would fail: no data
    configs = {label: task_config(protocol, "t", {"method": "standard", **o}, roots) for label, o in bn.items()}
    inputs = {label: json.loads(json.dumps({"data": to_dict(c.data), "model": to_dict(c.model)}, default=str))
              for label, c in configs.items()}
    record = {"labels": {"this data": [], "32 px": ["data.image_size=null"]}, "n": 2000, "inputs": inputs,
              "distances": {"this data": [], "32 px": []}}
    (tmp_path / "bn_stats_t.json").write_text(json.dumps(record))
    assert _bn_stats(protocol, "t", 0, tmp_path, roots, lambda s: None) == record
    (tmp_path / "bn_stats_t.json").write_text(json.dumps({k: v for k, v in record.items() if k != "inputs"}))
    with pytest.raises(UserError, match="does not exist"):  # which data it measured is unknown: measured again
        _bn_stats(protocol, "t", 0, tmp_path, roots, lambda s: None)


@pytest.mark.parametrize("name", list_protocols())
def test_every_shipped_protocol_builds(name, monkeypatch, capsys):
    protocol = load_protocol(name)
    roots = {"data": "/d", "models": "/m"}
    cfgs = {(task, label): cell_config(protocol, task, label, 1, Path("/o"), roots)
            for task, t in protocol.tasks.items() for label in t.cells}
    assert cfgs and all(c.train.seed == 1 and c.data.name.startswith("/d/") for c in cfgs.values())
    monkeypatch.setenv("COLUMNS", "400")  # one line per option: a name is never wrapped at its hyphen
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    assert name in capsys.readouterr().out, "`robustft bench --help` lists every shipped protocol"


def test_transfer_protocols_are_the_cpu_transfer_config():
    """The suites that replaced bench/transfer.py run configs/cpu/cifar100_transfer.yaml, as it did."""
    roots = {"data": "/d", "models": "/m"}
    base = ["data.name=/d/cifar100", "model.checkpoint=/m/cifar10_resnet20_linf_at.pt", "train.seed=0"]
    expected = {"standard": ["method=standard"], "pgd_at": [], "pgd_at lr=0.05": [],
                "twins λ=1": ["method=twins", "method_args.lam=1.0"],
                "twins λ=0.4": ["method=twins", "method_args.lam=0.4"], "pgd_at lr=0.01": ["optim.lr=0.01"],
                "twins λ=1 lr=0.01": ["method=twins", "method_args.lam=1.0", "optim.lr=0.01"]}
    for name in ("transfer-baselines", "transfer-twins"):
        protocol = load_protocol(name)
        for label in protocol.tasks["transfer"].cells:
            got = to_dict(cell_config(protocol, "transfer", label, 0, Path("/o"), roots))
            want = to_dict(load_config(ROOT / "configs/cpu/cifar100_transfer.yaml", base + expected[label]))
            assert got == want, (name, label)
    twins = load_protocol("transfer-twins").tasks["transfer"]
    assert twins.groups() == {"pgd_at": ["pgd_at lr=0.05", "pgd_at lr=0.01"],
                              "twins": ["twins λ=1", "twins λ=0.4", "twins λ=1 lr=0.01"]}
    assert (twins.autoattack.n, twins.autoattack.selected_only, twins.select) == (100, True, "robust_acc")


def test_cpu_small_cells_build():
    protocol = load_protocol("cpu-small")
    roots = {"data": "/d", "models": "/m"}
    cfgs = {label: cell_config(protocol, task, label, 1, Path("/o"), roots)
            for task, t in protocol.tasks.items() for label in t.cells}
    probe = str(cell_dir(Path("/o"), "transfer", "adv_linear_probe", 1))
    assert len(cfgs) == 14 and cfgs["roli lora"].model.init_head == probe
    assert cfgs["twins + roli head"].model.init_head == probe
    assert {c.data.name for c in cfgs.values()} == {"/d/cifar100", "/d/cifar10-jpeg/cifar10-jpeg.zip"}
