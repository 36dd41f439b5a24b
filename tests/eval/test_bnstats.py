"""bn_stat_distance: zero where the data has the stored statistics, the exact shift and variance ratio otherwise."""

import math

import pytest
import torch
from torch import nn

from robustft.data import ArrayDataset
from robustft.eval.bnstats import bn_stat_distance


def _data(x: torch.Tensor) -> ArrayDataset:
    return ArrayDataset(x, torch.zeros(len(x), dtype=torch.int64), ["a"], "t")


def test_distance_is_exact_for_known_statistics():
    torch.manual_seed(0)
    x = torch.randint(0, 256, (200, 3, 4, 4), dtype=torch.uint8)
    pixels = x.float().div(255).transpose(0, 1).flatten(1).double()
    model = nn.Sequential(nn.BatchNorm2d(3, eps=0.0), nn.Flatten())
    bn = model[0]
    bn.running_mean.copy_(pixels.mean(1))
    bn.running_var.copy_(pixels.var(1, unbiased=False))
    (d,) = bn_stat_distance(model, _data(x), batch_size=64)  # batches of unequal size: exact sums, not batch means
    assert d.layer == "0"
    assert d.mean_shift == pytest.approx(0, abs=1e-5) and d.log_var_ratio == pytest.approx(0, abs=1e-5)
    bn.running_mean.sub_(0.1 * pixels.std(1, unbiased=False))  # data mean now 0.1 stored σ above the stored mean
    bn.running_var.mul_(4.0)  # and its variance a quarter of the stored one
    (d,) = bn_stat_distance(model, _data(x), batch_size=64)
    assert d.mean_shift == pytest.approx(0.05, rel=1e-4)  # 0.1 σ_data = 0.05 σ_stored
    assert d.log_var_ratio == pytest.approx(math.log(4.0), rel=1e-4)
    assert model.training  # the caller's mode is restored


def test_a_model_without_batch_norm_is_refused():
    with pytest.raises(ValueError, match="no batch-norm layer"):
        bn_stat_distance(nn.Flatten(), _data(torch.zeros(2, 3, 4, 4, dtype=torch.uint8)))
