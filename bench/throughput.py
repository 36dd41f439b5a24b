"""Adversarial fine-tuning step throughput: the robustft engine vs a loop written the way the seed research code is.

Both train the same model (the shared reference ResNet-20 architecture, random init: speed does not depend on the
weights) on the same images with the same batch size and PGD steps, one after the other in one process. The
seed-style loop mirrors TWINS' `train-AT.py` + `FastGradientSignUntargeted`: a DataLoader with per-sample
crop/flip transforms, NCHW tensors, `model.eval()` before and `model.train()` after every attack, attack-then-train.
The engine path is `robustft.engine.fit` itself (uint8 data on the device, batched tensor augmentation,
channels_last, eval-mode guard inside the attack).

Writes bench/results/throughput.json. Usage: python bench/throughput.py [--steps 10] [--images 1280]
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from robustft._io import atomic_write_json
from robustft.attacks import PGD
from robustft.data import ArrayDataset
from robustft.engine import DistInfo, fit, from_dict
from robustft.engine.config import RunConfig
from robustft.methods import create_method
from robustft.models import create_model
from robustft.runtime import provenance

RESULTS = Path(__file__).parent / "results" / "throughput.json"


class _PerSampleCifar(Dataset):
    """What a torchvision RandomCrop(32, 4) + RandomHorizontalFlip + ToTensor pipeline does, one image at a time."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        img = F.pad(self.x[i].float() / 255, (4, 4, 4, 4))
        top, left = torch.randint(0, 9, (2,)).tolist()
        img = img[:, top:top + 32, left:left + 32]
        if torch.rand(()) < 0.5:
            img = img.flip(-1)
        return img, self.y[i]


def seed_style_epoch(data: ArrayDataset, steps: int, batch_size: int) -> float:
    """One epoch of the seed code's loop; returns images/s."""
    model = create_model("cifar_resnet20", num_classes=data.num_classes)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    loader = DataLoader(_PerSampleCifar(data.x, data.y), batch_size=batch_size, shuffle=True, drop_last=True)
    eps, alpha = 8 / 255, 2 / 255
    start, n = time.perf_counter(), 0
    for x, y in loader:
        model.train()
        # attack (FastGradientSignUntargeted.perturb): eval, PGD with autograd.grad on x, back to train
        adv = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)
        adv.requires_grad = True
        model.eval()
        for _ in range(steps):
            loss = F.cross_entropy(model(adv), y)
            grad = torch.autograd.grad(loss, adv, only_inputs=True)[0]
            adv.data += alpha * torch.sign(grad.data)
            adv = torch.max(torch.min(adv, x + eps), x - eps).clamp(0, 1)
        model.train()
        loss = F.cross_entropy(model(adv), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        n += len(y)
    return n / (time.perf_counter() - start)


def engine_epoch(data: ArrayDataset, steps: int, batch_size: int, channels_last: bool) -> float:
    """One epoch of ``robustft.engine.fit`` with pgd_at; returns its measured training images/s."""
    cfg = from_dict(RunConfig, {"method": "pgd_at", "data": {"name": "bench", "batch_size": batch_size},
                                "attack": {"steps": steps, "step_size": "2/255"},
                                "optim": {"lr": 0.01, "schedule": "constant"},
                                "eval": {"val_steps": 1}, "train": {"epochs": 1, "channels_last": channels_last}})
    model = create_model("cifar_resnet20", num_classes=data.num_classes)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    method = create_method("pgd_at", PGD(steps=steps, step_size=2 / 255))
    val = data.subset(range(8))
    with tempfile.TemporaryDirectory() as tmp:
        result = fit(method, method.prepare(model), data, val, cfg, Path(tmp), DistInfo(0, 1, torch.device("cpu")),
                     log=lambda s: None)
    return result.history[0]["train_images_per_s"]


def main() -> None:
    """Measure both loops and write the results file."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10, help="PGD steps per training step")
    parser.add_argument("--images", type=int, default=1280, help="images per measured epoch")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    data = ArrayDataset(x=torch.randint(0, 256, (args.images, 3, 32, 32), generator=g, dtype=torch.uint8),
                        y=torch.randint(0, 10, (args.images,), generator=g), classes=[str(i) for i in range(10)],
                        name="random")
    start = time.perf_counter()
    engine_epoch(data.subset(range(args.batch_size * 2)), args.steps, args.batch_size, True)  # warm-up
    rows = {
        "seed_style_nchw": seed_style_epoch(data, args.steps, args.batch_size),
        "engine_nchw": engine_epoch(data, args.steps, args.batch_size, channels_last=False),
        "engine_channels_last": engine_epoch(data, args.steps, args.batch_size, channels_last=True),
    }
    record = {"what": "adversarial fine-tuning (pgd_at) training images/s, cifar_resnet20, 32 px",
              "pgd_steps": args.steps, "batch_size": args.batch_size, "images": args.images,
              "images_per_s": rows, "speedup_vs_seed_style": {k: v / rows["seed_style_nchw"] for k, v in rows.items()},
              "command": f"python bench/throughput.py --steps {args.steps} --images {args.images} "
                         f"--batch-size {args.batch_size}",
              "wall_s": time.perf_counter() - start, "provenance": provenance(0)}
    atomic_write_json(record, args.out)
    print(json.dumps({k: record[k] for k in ("images_per_s", "speedup_vs_seed_style")}, indent=2))


if __name__ == "__main__":
    main()
