"""Every finished run writes per-test-image correctness (``test_samples.json``) that reproduces its test accuracies,
for the model and, with ``eval.test_source``, for its source model: the input of paired comparisons."""

import json

from robustft.cli import main
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
