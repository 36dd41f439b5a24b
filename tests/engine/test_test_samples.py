"""Every finished run writes per-test-image correctness (``test_samples.json``) that reproduces its test accuracies,
for the model and, with ``eval.test_source``, for its source model: the input of paired comparisons."""

import json

from robustft.attacks import PGD
from robustft.cli import main
from robustft.data import load_dataset
from robustft.engine.run import load_run_model
from robustft.eval import evaluate
from support import finetune_args


def test_run_writes_per_image_flags_matching_its_test_accuracies(tiny_task, tmp_path):
    data, source = tiny_task
    assert main(finetune_args(data, source, tmp_path, "r", "--epochs", "1", "--set", "eval.test_source=true")) == 0
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    samples = json.loads((tmp_path / "r" / "test_samples.json").read_text())
    assert samples["n"] == results["test"]["n"] == 48
    for key in ("test", "test_source"):
        tested = results[key]["test"] if key == "test_source" else results["test"]
        flags = samples[key]
        assert set(flags) == {"clean", "pgd2", "worst_case"}
        assert all(len(f) == 48 and set(f) <= {"0", "1"} for f in flags.values())
        assert flags["clean"].count("1") / 48 == tested["clean_acc"]
        assert flags["pgd2"].count("1") / 48 == tested["robust_acc"]["pgd2"]
        assert all(c == "1" for c, p in zip(flags["clean"], flags["pgd2"], strict=True) if p == "1"), \
            "an image robust under PGD is clean-correct (attacks run on clean-correct images only)"


def test_test_random_start_false_runs_the_test_pgd_from_the_clean_image(tiny_task, tmp_path):
    """``eval.test_random_start: false`` (the official TWINS and AutoLoRa test): the run's per-image PGD flags are those
    of a PGD started at the clean image, whatever the seed (a randomly started PGD gives other flags here)."""
    data, source = tiny_task
    assert main(finetune_args(data, source, tmp_path, "r", "--epochs", "1",
                              "--set", "eval.test_random_start=false")) == 0
    flags = json.loads((tmp_path / "r" / "test_samples.json").read_text())["test"]["pgd2"]
    model, test = load_run_model(tmp_path / "r"), load_dataset(data, "test")
    result = {start: evaluate(model, test, [PGD(steps=2, random_start=start, name="pgd2")], seed=seed,
                              progress=False).flags()["pgd2"] for start, seed in ((False, 7), (True, 0))}
    assert flags == result[False]
    assert result[True] != result[False], "on this data the two starts must give different flags"
