"""subset_autoattack: PGD + AutoAttack on a class-balanced subset — the numbers evaluate() gives — cached as JSON."""

import json

import pytest
import torch

import robustft.eval.subset as subset_module
from robustft.attacks import create_attack
from robustft.data import ArrayDataset
from robustft.errors import UserError
from robustft.eval import balanced_subset, evaluate, subset_autoattack

OPTIONS = dict(eps=8 / 255, norm="linf", steps=3, seed=1)
AA = dict(version="custom", attacks=["apgd-ce"])


@pytest.fixture
def data() -> ArrayDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (40, 3, 8, 8), generator=g, dtype=torch.uint8)
    return ArrayDataset(x=x, y=torch.arange(40) % 4, classes=list("abcd"), name="rand")


def _numbers(record: dict) -> dict:
    """A record without its timings (which differ between calls)."""
    return {k: v for k, v in record.items() if k not in ("timing", "images_per_s")}


def _never(*args, **kwargs):
    raise AssertionError("the cached record was recomputed")


def test_record_is_evaluates_on_the_balanced_subset(tiny_model, data):
    attacks = [create_attack("pgd", **OPTIONS), create_attack("autoattack", aa_version="custom", aa_attacks=["apgd-ce"],
                                                               **OPTIONS)]
    result = evaluate(tiny_model, balanced_subset(data, 12), attacks, batch_size=5, seed=1)
    direct = {**result.to_dict(), "samples": result.flags()}
    record = subset_autoattack(lambda: (tiny_model, data), 12, batch_size=5, **AA, **OPTIONS)
    assert _numbers(record) == _numbers(direct) and list(record["robust_acc"]) == ["pgd3", "autoattack"]
    assert len(record["samples"]["autoattack"]) == 12, "the subset's per-image flags come with the record"
    # a run's own test_autoattack: AutoAttack alone, exactly as before the helper existed
    only_aa = evaluate(tiny_model, balanced_subset(data, 12), attacks[1:], batch_size=5, seed=1)
    alone = {**only_aa.to_dict(), "samples": only_aa.flags()}
    no_pgd = subset_autoattack(lambda: (tiny_model, data), 12, with_pgd=False, batch_size=5, **AA, **OPTIONS)
    assert _numbers(no_pgd) == _numbers(alone) and list(no_pgd["robust_acc"]) == ["autoattack"]


def test_second_call_reads_the_cache(tiny_model, data, tmp_path, monkeypatch):
    path = tmp_path / "aa.json"
    first = subset_autoattack(lambda: (tiny_model, data), 12, batch_size=5, path=path, **AA, **OPTIONS)
    assert json.loads(path.read_text()) == first
    monkeypatch.setattr(subset_module, "evaluate_sharded", _never)
    assert subset_autoattack(_never, 12, batch_size=5, path=path, **AA, **OPTIONS) == first  # bit-identical
    for changed in (dict(n=8), dict(with_pgd=False), dict(steps=5)):
        kwargs = {**OPTIONS, **AA, "n": 12, **changed}
        with pytest.raises(UserError, match="other settings"):
            subset_autoattack(_never, path=path, **kwargs)
