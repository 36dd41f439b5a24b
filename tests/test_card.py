"""Only a JSON that says it is a robustft card is read as one; a damaged robustft card is one error line."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import robustft
from robustft.card import CARD_MARKER, write_card
from robustft.cli import main
from robustft.engine import RunConfig, to_dict
from robustft.models import create_model, save_state_dict
from support import error_line


def _evaluate(ckpt, data, *extra: str) -> int:
    return main(["evaluate", "--arch", "cifar_resnet20", "--checkpoint", str(ckpt), "--data", str(data),
                 "--steps", "1", *extra])


@pytest.mark.parametrize("foreign", [
    {"arch": "cifar_resnet20 (width 16, BasicBlock x3 per stage)", "classes": ["a"]},  # a model card of its own
    {"architectures": ["ResNetForImageClassification"], "num_labels": 10},  # an HF config.json
    ["not", "a", "card"],
])
def test_a_foreign_json_beside_the_checkpoint_is_not_read_as_a_card(ckpt, npz_data, capsys, foreign):
    ckpt.with_suffix(".json").write_text(json.dumps(foreign))
    assert _evaluate(ckpt, npz_data) == 0
    assert "n=20" in capsys.readouterr().out


@pytest.mark.parametrize("text,match", [
    ('{"robustft_card": 1, "arch": ', "damaged robustft card"),
    ('["robustft_card"]', "damaged robustft card"),
    (json.dumps({CARD_MARKER: 1, "arch": "cifar_resnet20", "num_classes": 10, "recipe": {}}), "method"),
    (json.dumps({CARD_MARKER: 1, "arch": "cifar_resnet20", "num_classes": 10, "method": "pgd_at",
                 "recipe": {"model": {"options": [1]}}}), "recipe.model.options"),
    (json.dumps({CARD_MARKER: 1, "arch": "cifar_resnet20", "num_classes": 10, "method": "pgd_at",
                 "recipe": {"model": {"options": {"widht": 4}}}}), "widht"),
    (json.dumps({CARD_MARKER: 1, "arch": "cifar_resnet20", "num_classes": 10, "method": "twins",
                 "recipe": {"method_args": {"lamb": 1}}}), "method_args.lamb"),
    (json.dumps({CARD_MARKER: 1, "arch": "wrn_28_10", "num_classes": 10, "method": "pgd_at", "recipe": {}}),
     "exported for --arch wrn_28_10"),
    (json.dumps({CARD_MARKER: 1, "arch": "cifar_resnet20", "num_classes": 10, "method": "pgd_at", "recipe": {},
                 "data": {"image_size": 32}}), "data.image_size"),
    (json.dumps({CARD_MARKER: 1, "arch": "cifar_resnet20", "num_classes": 10, "method": "pgd_at", "recipe": {},
                 "data": {"classes": [1]}, "classes": [1]}), "malformed: classes"),
])
def test_a_damaged_robustft_card_is_one_error_line(ckpt, npz_data, capsys, text, match):
    ckpt.with_suffix(".json").write_text(text)
    assert _evaluate(ckpt, npz_data) == 2
    assert match in error_line(capsys.readouterr().err)


def test_an_export_carries_the_marker(tiny_task, tmp_path):
    from support import finetune_args

    data, source = tiny_task
    assert main(finetune_args(data, source, tmp_path, "r", "--epochs", "1")) == 0
    card = json.loads((tmp_path / "r" / "model.json").read_text())
    assert card[CARD_MARKER] == 1
    assert card["normalize"] == {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0], "source": "checkpoint"}
    # and evaluate rebuilds the width-4 export from its card (a plain --arch cifar_resnet20 would be width 16)
    assert main(["evaluate", "--arch", "cifar_resnet20", "--checkpoint", str(tmp_path / "r" / "model.pt"),
                 "--data", str(data), "--steps", "1"]) == 0


def test_a_run_from_weights_without_normalization_says_and_records_what_it_assumed(tiny_task, tmp_path, capsys):
    from support import finetune_args

    data, source = tiny_task
    bare = tmp_path / "bare.pt"  # as timm, HF-hub and ARES files come: no normalize.* / normalizer keys
    torch.save({k: v for k, v in torch.load(source, weights_only=True).items() if not k.startswith("normalize.")},
               bare)
    assert main(finetune_args(data, bare, tmp_path, "r", "--epochs", "1")) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "normalization" in line]
    assert warnings == [f"robustft: warning: {bare} carries no input normalization (no normalize/normalizer mean and "
                        f"std) and none was given: assuming the cifar_resnet20 default, none (mean 0,0,0, std 1,1,1); "
                        f"if its weights were trained on other statistics, predictions are wrong: pass "
                        f"--normalization (model.normalization) none|cifar10|cifar100|imagenet or m1,m2,m3/s1,s2,s3"]
    card = json.loads((tmp_path / "r" / "model.json").read_text())
    assert card["normalize"] == {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0], "source": "assumed"}


def test_loading_an_export_never_imports_the_training_engine(tmp_path):
    model = create_model("cifar_resnet20", 3)
    recipe = to_dict(RunConfig())
    recipe["model"]["arch"] = "cifar_resnet20"
    save_state_dict(model, tmp_path / "model.pt")
    write_card(model, recipe, ["a", "b", "c"], tmp_path / "model.json", {}, precision={}, data={})
    script = ("import sys, robustft; m = robustft.load_model('cifar_resnet20', sys.argv[1]); print(m.get_classifier()"
              ".out_features, sorted(k for k in sys.modules if k.startswith('robustft.engine')))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(robustft.__file__).parents[1]),
                                                         os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "model.pt")], capture_output=True, text=True,
                         env=env, check=True).stdout
    assert out.split() == ["3", "[]"]
