"""Training and evaluation on the test device (``pytest -m cuda``: CUDA where present, else the CPU).

Tolerances, stated: a PGD-AT step (PGD-3 then the training pass) of the bundled robust ResNet-20 under bf16 autocast
with channels_last input and weights has a loss within 2% of the fp32 step's and a parameter gradient at cosine
≥ 0.95 to it (measured on the CPU: 0.3% and 0.979; bf16 keeps 8 bits of mantissa, and the attack's sign steps flip
where a pixel's gradient is near zero, so the adversarial examples differ a little; without the attack 0.997).
A 1-process DDP step (NCCL on CUDA, gloo on the CPU) all-reduces over one rank, an identity: it must equal the plain
step exactly.
"""

import copy
import socket

import pytest
import torch
from torch import nn

from robustft.attacks import PGD
from robustft.data import ArrayDataset, iterate_batches
from robustft.engine.config import load_config
from robustft.engine.distributed import DistInfo, cleanup, init_distributed
from robustft.engine.precision import autocast_for
from robustft.engine.train import StepSums, _setup, _step
from robustft.eval import evaluate
from robustft.eval.evaluate import full_fp32
from robustft.methods import create_method
from robustft.models import load_checkpoint
from support import tiny_resnet

pytestmark = pytest.mark.cuda


def _data(device: torch.device, n: int = 32) -> ArrayDataset:
    """``n`` random 32 px images of 10 classes, moved to ``device`` as the engine moves a loaded dataset."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    return ArrayDataset(x, torch.arange(n) % 10, [str(i) for i in range(10)], "random").to(device)


def _gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device,
              amp: str) -> tuple[torch.Tensor, torch.Tensor, set]:
    """(loss, flat parameter gradient, dtypes of the convolutions' outputs) of one PGD-AT step."""
    method = create_method("pgd_at", PGD(eps=8 / 255, steps=3))
    autocast, _ = autocast_for(device, amp)
    dtypes = set()
    hooks = [m.register_forward_hook(lambda m, i, o: dtypes.add(o.dtype)) for m in model.modules()
             if isinstance(m, nn.Conv2d)]
    model.train()
    with autocast():
        loss, _ = method.loss(model, x, y, torch.Generator(device).manual_seed(0))
    grads = torch.autograd.grad(loss, list(model.parameters()))
    for h in hooks:
        h.remove()
    return loss.float(), torch.cat([g.float().flatten() for g in grads]), dtypes


def test_bf16_channels_last_step_matches_fp32(device):
    model = load_checkpoint("cifar_resnet20.at_linf8_cifar10").to(device)
    fast = copy.deepcopy(model).to(memory_format=torch.channels_last)
    data = _data(device)
    (x, y), = iterate_batches(data, 32)
    (x_cl, _), = iterate_batches(data, 32, channels_last=True)
    assert x.device == device and x_cl.is_contiguous(memory_format=torch.channels_last)
    with full_fp32():  # the reference in true fp32 (cuDNN would otherwise use TF32 convolutions on a recent GPU)
        loss32, grad32, dtypes32 = _gradient(model, x, y, device, "off")
    loss16, grad16, dtypes16 = _gradient(fast, x_cl, y, device, "bf16")
    assert dtypes32 == {torch.float32} and dtypes16 == {torch.bfloat16}, "bf16 autocast must reach the convolutions"
    assert abs(loss16 - loss32) <= 0.02 * loss32
    assert torch.nn.functional.cosine_similarity(grad16, grad32, dim=0) >= 0.95


def test_evaluation_stays_fp32_inside_autocast(device):
    model = tiny_resnet(10).to(device).to(memory_format=torch.channels_last)
    data = _data(device)
    seen = set()
    model.fc.register_forward_hook(
        lambda m, i, o: seen.add((o.dtype, torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)))
    attack = PGD(eps=8 / 255, steps=2)
    reference = evaluate(model, data, [attack], channels_last=True, progress=False)
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = True  # the default: cuDNN convolutions in TF32 on Ampere and later
    try:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            inside = evaluate(model, data, [attack], channels_last=True, progress=False)
        assert torch.backends.cudnn.allow_tf32, "evaluate restores the caller's setting"
    finally:
        torch.backends.cudnn.allow_tf32 = tf32
    assert seen == {(torch.float32, False, False)}, "every logit of clean and attacked passes in full fp32"
    assert inside.correct.keys() == reference.correct.keys()
    assert all(torch.equal(inside.correct[k], reference.correct[k]) for k in reference.correct)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_steps(model: nn.Module, data: ArrayDataset, info: DistInfo) -> nn.Module:
    """Two PGD-AT optimizer steps of the engine (``_setup`` + ``_step``) in fp32; returns the wrapped model."""
    cfg = load_config(None, ["train.amp=off", "data.batch_size=16", "attack.steps=2", f"train.device={info.device}"])
    method = create_method("pgd_at", PGD(eps=8 / 255, steps=2))
    loop = _setup(method, model, data, cfg, info)
    model.train()
    for x, y in iterate_batches(data, 16, channels_last=True):
        _step(loop, method, x, y, StepSums(info.device))
    return loop.train_model


def test_one_process_ddp_matches_a_plain_step(device, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)  # the same kernels in both runs on a GPU
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    data = _data(device)
    plain = tiny_resnet(10).to(device).to(memory_format=torch.channels_last)
    ddp = copy.deepcopy(plain)
    assert not isinstance(_two_steps(plain, data, DistInfo(0, 1, device)), nn.parallel.DistributedDataParallel)
    for key, value in {"LOCAL_RANK": "0", "RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(_free_port())}.items():
        monkeypatch.setenv(key, value)  # what torchrun --nproc_per_node 1 sets
    info = init_distributed(str(device))
    try:
        assert info.launched and torch.distributed.get_backend() == ("nccl" if device.type == "cuda" else "gloo")
        assert isinstance(_two_steps(ddp, data, info), nn.parallel.DistributedDataParallel)
    finally:
        cleanup(info)
    assert not info.launched
    for (name, a), b in zip(plain.state_dict().items(), ddp.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
