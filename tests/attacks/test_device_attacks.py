"""PGD on the test device (``pytest -m cuda``) equals PGD on the CPU.

Tolerance, stated: from the same start (zero; random starts come from per-device generators), in full fp32 as
evaluation runs, logits differ across devices by float summation order only (~1e-6), so a sign step flips only where
a pixel's gradient is that close to zero: ≥ 99% of the adversarial pixels agree to 1e-5 and every sample's attacked
loss agrees to 1e-3. The device's copy runs channels_last, so pointed at the CPU the test still compares two memory
formats' kernels.
"""

import copy

import pytest
import torch
import torch.nn.functional as F

from robustft.attacks import PGD
from robustft.eval.evaluate import full_fp32
from robustft.models import load_checkpoint

pytestmark = pytest.mark.cuda


@pytest.mark.parametrize("norm,eps", [("linf", 8 / 255), ("l2", 0.5)])
def test_pgd_on_the_device_equals_pgd_on_the_cpu(device, norm, eps):
    model = load_checkpoint("cifar_resnet20.at_linf8_cifar10").eval()
    on_device = copy.deepcopy(model).to(device).to(memory_format=torch.channels_last)
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(32, 3, 32, 32, generator=g), torch.arange(32) % 10
    attack = PGD(eps=eps, norm=norm, steps=5, random_start=False)
    with full_fp32():
        x_cpu = attack.perturb(model, x, y)
        x_dev = attack.perturb(on_device, x.to(device).contiguous(memory_format=torch.channels_last), y.to(device))
        with torch.no_grad():
            loss_cpu = F.cross_entropy(model(x_cpu), y, reduction="none")
            loss_dev = F.cross_entropy(on_device(x_dev), y.to(device), reduction="none").cpu()
    x_dev = x_dev.cpu()
    assert ((x_dev - x_cpu).abs() <= 1e-5).float().mean() >= 0.99
    torch.testing.assert_close(loss_dev, loss_cpu, rtol=0, atol=1e-3)
    assert (loss_cpu > F.cross_entropy(model(x), y, reduction="none").detach()).float().mean() > 0.9, "it attacks"
