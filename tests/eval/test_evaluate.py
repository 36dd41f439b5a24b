"""evaluate(): per-sample bookkeeping, worst case, determinism; balanced subsets; the reference model's numbers."""

import pytest
import torch

from robustft.attacks import PGD, fgsm
from robustft.data import ArrayDataset, load_dataset
from robustft.eval import balanced_subset, evaluate
from robustft.models import load_checkpoint


@pytest.fixture
def data() -> ArrayDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (50, 3, 8, 8), generator=g, dtype=torch.uint8)
    return ArrayDataset(x=x, y=torch.randint(0, 4, (50,), generator=g), classes=list("abcd"), name="rand")


def test_worst_case_is_and_of_clean_and_attacks(tiny_model, data):
    res = evaluate(tiny_model, data, [PGD(eps=8 / 255, steps=3), fgsm(8 / 255)], batch_size=16, progress=False)
    c = res.correct
    assert torch.equal(c["worst_case"], c["clean"] & c["pgd"] & c["fgsm"])
    assert not (c["pgd"] & ~c["clean"]).any(), "a clean mistake can never count as robust"
    assert res.clean_acc == pytest.approx(c["clean"].float().mean().item())
    assert res.worst_case_acc <= min(res.robust_acc.values()) <= res.clean_acc
    d = res.to_dict()
    assert d["n"] == 50 and d["eps"] == pytest.approx(8 / 255) and d["norm"] == "linf" and "correct" not in d
    assert set(d["timing"]) == {"clean", "pgd", "fgsm", "total"}


def test_evaluate_is_deterministic_and_restores_mode(tiny_model, data):
    tiny_model.train()
    a = evaluate(tiny_model, data, [PGD(steps=2)], seed=3, progress=False)
    b = evaluate(tiny_model, data, [PGD(steps=2)], seed=3, progress=False)
    assert torch.equal(a.correct["pgd"], b.correct["pgd"]) and tiny_model.training


def test_clean_only_and_duplicate_names(tiny_model, data):
    res = evaluate(tiny_model, data, [], progress=False)
    assert res.robust_acc == {} and res.worst_case_acc == res.clean_acc
    with pytest.raises(ValueError):
        evaluate(tiny_model, data, [PGD(), PGD()], progress=False)


def test_balanced_subset(data):
    sub = balanced_subset(data, 8)
    assert torch.bincount(sub.y, minlength=4).tolist() == [2, 2, 2, 2]
    assert torch.equal(sub.x, balanced_subset(data, 8).x)
    assert torch.bincount(balanced_subset(data, 6).y, minlength=4).tolist() == [2, 2, 1, 1]


def test_reference_model_matches_its_card(shared_dir):
    """The shared robust ResNet-20 on 200 of the card's 1000 images (every 50th test image): within 5 points."""
    model = load_checkpoint("cifar_resnet20", shared_dir / "models/cifar10_resnet20_linf_at.pt")
    data = load_dataset(str(shared_dir / "data/cifar10-jpeg/cifar10-jpeg.zip"), "test", n=200)
    assert torch.bincount(data.y).tolist() == [20] * 10
    res = evaluate(model.to(memory_format=torch.channels_last), data, [PGD(eps=8 / 255, steps=20)],
                   channels_last=True, progress=False)
    # card (1000 images): clean 0.644, PGD-20 0.385; 200 images have a ~3.4-point standard error
    assert res.clean_acc == pytest.approx(0.644, abs=0.07)
    assert res.robust_acc["pgd"] == pytest.approx(0.385, abs=0.07)


class _Constant(torch.nn.Module):
    """Always predicts class 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tensor([1.0, 0.0, 0.0, 0.0]).expand(len(x), 4)


def test_mean_per_class_accuracy_is_recorded_beside_the_plain_one():
    y = torch.tensor([0] * 6 + [1] * 2 + [2] * 2)  # unbalanced; class 3 absent
    data = ArrayDataset(x=torch.zeros(10, 3, 4, 4, dtype=torch.uint8), y=y, classes=list("abcd"), name="u")
    result = evaluate(_Constant(), data, progress=False)
    assert result.clean_acc == pytest.approx(0.6)
    assert result.class_mean_acc["clean"] == pytest.approx(1 / 3)  # classes 0, 1, 2: accuracies 1, 0, 0
    assert result.to_dict()["class_mean_acc"]["clean"] == pytest.approx(1 / 3)
