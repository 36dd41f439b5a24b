"""Augmentation ops: crop/flip correctness, determinism, dtype handling, and resize."""

import pytest
import torch

from robustft.data import Augment, random_crop, random_hflip, resize


def _batch(dtype: torch.dtype = torch.uint8) -> torch.Tensor:
    x = torch.randint(1, 256, (32, 3, 7, 9), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    return x if dtype == torch.uint8 else x.to(dtype) / 255  # every input pixel is nonzero


def _shift(x: torch.Tensor, dy: int, dx: int, p: int) -> torch.Tensor:
    """``x`` zero-padded by ``p`` and cropped at offset (p + dy, p + dx)."""
    padded = torch.nn.functional.pad(x, (p,) * 4)
    return padded[..., p + dy:p + dy + x.shape[-2], p + dx:p + dx + x.shape[-1]]


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_random_crop_is_a_zero_padded_shift_of_each_sample(dtype):
    x, p = _batch(dtype), 3
    out = random_crop(x, p, torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.dtype == dtype
    shifts = set()
    for i in range(len(x)):
        matches = [(dy, dx) for dy in range(-p, p + 1) for dx in range(-p, p + 1)
                   if torch.equal(out[i], _shift(x[i], dy, dx, p))]
        assert len(matches) == 1, f"sample {i} is not a shift by at most {p}"
        shifts.add(matches[0])
    assert len(shifts) > 10  # offsets are drawn per sample, not once per batch
    assert torch.equal(out, random_crop(x, p, torch.Generator().manual_seed(1)))
    assert not torch.equal(out, random_crop(x, p, torch.Generator().manual_seed(2)))


def test_random_hflip_flips_exactly_the_drawn_samples():
    x = _batch()
    out = random_hflip(x, torch.Generator().manual_seed(5))
    chosen = torch.rand(len(x), generator=torch.Generator().manual_seed(5)) < 0.5
    assert 0 < chosen.sum() < len(x)
    assert torch.equal(out[chosen], x[chosen].flip(-1)) and torch.equal(out[~chosen], x[~chosen])


def test_resize_keeps_dtype_and_antialiases_when_shrinking():
    checker = (torch.arange(12)[:, None] + torch.arange(12)).remainder(2).mul(255).to(torch.uint8).expand(2, 3, 12, 12)
    small = resize(checker, 4)
    assert small.dtype == torch.uint8 and small.shape == (2, 3, 4, 4)
    # Plain bilinear at 3x lands on single pixels (pure 0 or 255); antialiasing averages the neighbourhood.
    assert ((small > 60) & (small < 195)).all()
    assert resize(checker, (12, 12)) is checker
    assert resize(torch.full((1, 3, 4, 4), 0.25), 10).sub(0.25).abs().max() < 1e-6


def test_augment_order_determinism_and_presets():
    assert Augment.cifar() == Augment(crop_padding=4, hflip=True)
    aug = Augment.cifar(size=12)
    x = _batch(torch.float32)
    out = aug(x, torch.Generator().manual_seed(3))
    assert out.shape == (32, 3, 12, 12)
    assert torch.equal(out, aug(x, torch.Generator().manual_seed(3)))
    assert torch.equal(Augment()(x, torch.Generator()), x)
