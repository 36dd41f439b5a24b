"""The 224-px data path, measured side by side on one synthetic image folder (issue #23).

1. Decode throughput: robustft's decode (all cores, JPEG draft, shorter side to 256, as the paper views store
   images) vs the one-process decode of robustft before it (PIL open, convert, resize to a 224 square, one file after
   another), on the same folder of JPEGs of 300-500 px.
2. The data path alone, epoch 2, images/s of 224-px RandomResizedCrop + flip batches: the packed store in memory,
   the store on disk (read ahead by ``os.preadv``), and a seed-style loader (what the official code does: every
   epoch, PIL decode + Resize(256) + RandomResizedCrop(224) + flip per image in a torch DataLoader with 2 workers).
3. Peak RSS of a run whose decoded data is 3x its memory budget (``storage=auto`` then reads from disk), in a fresh
   process, next to the RSS of the same process before it touched any data.
4. A ResNet-50 PGD-1 training step at 224 px (random weights), images/s with batches from disk vs from memory.

Writes bench/results/data_path.json (machine, versions, load average, wall times). Usage:
    python bench/data_path.py [--images 3000] [--batch-size 64] [--steps 4] [--out bench/results/data_path.json]
"""

import argparse
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from robustft._io import atomic_write_json
from robustft.data import View, iterate_batches, load_splits
from robustft.data.imagefolder import _decoded, _DirTree, _index
from robustft.data.limits import DecodeLimits
from robustft.runtime import provenance

RESULTS = Path(__file__).parent / "results" / "data_path.json"
SIZE, STORAGE = 224, 256
MB = 2**20


def make_folder(root: Path, n: int, seed: int = 0) -> None:
    """``n`` JPEGs (quality 90) of 300-500 px per side, smooth content plus noise, in 10 classes under train/."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        w, h = (int(v) for v in rng.integers(300, 501, 2))
        coarse = Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
        pixels = np.clip(np.asarray(coarse, np.int16) + rng.integers(-12, 13, (h, w, 3)), 0, 255).astype(np.uint8)
        (root / "train" / f"c{i % 10}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(root / "train" / f"c{i % 10}" / f"{i:05d}.jpg", quality=90)


def decode_before(paths: list[Path]) -> None:
    """The decode of robustft before issue #23: one process, full decode, squash to a 224 square."""
    for path in paths:
        with Image.open(path) as image:
            np.asarray(image.convert("RGB").resize((SIZE, SIZE), Image.BILINEAR))


def decode_now(root: Path, workers: int) -> None:
    """robustft's decode into the packed store's layout (shorter side 256) with ``workers`` processes."""
    os.environ["ROBUSTFT_DECODE_WORKERS"] = str(workers)
    tree = _DirTree(root)
    files = _index(tree)[1]["train"]
    for _ in _decoded(tree, files, None, DecodeLimits(), STORAGE):
        pass


def timed(fn, *args) -> float:
    """Wall seconds of ``fn(*args)``."""
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def rrc_box(width: int, height: int, rng: random.Random) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop.get_params (scale 0.08-1, ratio 3/4-4/3) with Python's random; the rare
    fallback simplified to the whole image (it costs the same)."""
    area = width * height
    for _ in range(10):
        target = area * rng.uniform(0.08, 1.0)
        aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, height - h), rng.randint(0, width - w), h, w
    return 0, 0, height, width


class SeedStyle(torch.utils.data.Dataset):
    """The official loaders' per-sample PIL pipeline: decode, Resize(256), RandomResizedCrop(224), flip, to tensor."""

    def __init__(self, files: list[tuple[Path, int]]) -> None:
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        rng = random.Random()
        path, label = self.files[i]
        with Image.open(path) as image:
            image = image.convert("RGB")
            w, h = image.size
            short = STORAGE / min(w, h)
            image = image.resize((max(STORAGE, int(w * short)), max(STORAGE, int(h * short))), Image.BILINEAR)
            top, left, ch, cw = rrc_box(*image.size, rng)
            image = image.resize((SIZE, SIZE), Image.BILINEAR, box=(left, top, left + cw, top + ch))
            if rng.random() < 0.5:
                image = image.transpose(Image.FLIP_LEFT_RIGHT)
            return torch.from_numpy(np.array(image)).permute(2, 0, 1).float().div(255), label


def epoch2_rate(batches_of_epoch, n: int) -> float:
    """Images/s of the second of two epochs (each a fresh iterable from ``batches_of_epoch(epoch)``)."""
    for epoch in range(2):
        start = time.perf_counter()
        for x, _ in batches_of_epoch(epoch):
            x.sum()  # touch the batch, as a model would
        seconds = time.perf_counter() - start
    return n / seconds


def data_path(root: Path, batch_size: int) -> dict[str, float]:
    """Epoch-2 images/s of the memory store, the disk store and the seed-style DataLoader."""
    view = View("random_resized_crop", SIZE, hflip=True)
    rates = {}
    for storage in ("memory", "disk"):
        data = load_splits(root, {"train_full": None}, image_size=SIZE, storage_size=STORAGE, storage=storage)
        data = data["train_full"]
        generator = torch.Generator().manual_seed(0)
        rates[storage] = epoch2_rate(lambda _: iterate_batches(data, batch_size, shuffle=True, generator=generator,
                                                               augment=view, drop_last=True),
                                     len(data) // batch_size * batch_size)
    tree = _DirTree(root)
    files = [(root / name, label) for name, label in _index(tree)[1]["train"]]
    loader = torch.utils.data.DataLoader(SeedStyle(files), batch_size=batch_size, shuffle=True, num_workers=2,
                                         drop_last=True)
    rates["seed_style_dataloader_2_workers"] = epoch2_rate(lambda _: loader, len(files) // batch_size * batch_size)
    return rates


RSS_CHILD = """
import json, sys, torch
from robustft.data import View, iterate_batches, load_splits
def rss_mb(key="VmRSS"):  # VmHWM, not ru_maxrss: that keeps the forking parent's high-water mark across exec
    return int(next(l for l in open("/proc/self/status") if l.startswith(key)).split()[1]) / 1024
before = rss_mb()
root, budget, batch = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
data = load_splits(root, {"train_full": None}, image_size=224, storage_size=256, storage="auto",
                   memory_budget_mb=budget)["train_full"]
view = View("random_resized_crop", 224, hflip=True)
for x, y in iterate_batches(data, batch, shuffle=True, generator=torch.Generator().manual_seed(0), augment=view):
    x.sum()
print(json.dumps({"rss_before_data_mb": before, "peak_rss_mb": rss_mb("VmHWM"),
                  "storage": type(data.images).__name__, "decoded_mb": data.images.nbytes / 2**20}))
"""


def peak_rss(root: Path, batch_size: int) -> dict[str, Any]:
    """A fresh process iterating one epoch of the store with a memory budget of a third of its decoded size."""
    decoded = load_splits(root, {"train_full": None}, image_size=SIZE, storage_size=STORAGE,
                          storage="disk")["train_full"].images.nbytes / MB
    budget = decoded / 3
    out = subprocess.run([sys.executable, "-c", RSS_CHILD, str(root), str(budget), str(batch_size)],
                         capture_output=True, text=True, check=True)
    record = json.loads(out.stdout.strip().splitlines()[-1])
    record["memory_budget_mb"] = budget
    record["peak_rss_above_start_mb"] = record["peak_rss_mb"] - record["rss_before_data_mb"]
    return record


def resnet50_steps(root: Path, batch_size: int, steps: int) -> dict[str, float]:
    """Images/s of ResNet-50 PGD-1 training steps at 224 px, batches from the disk store vs the memory store."""
    from robustft.attacks import PGD
    from robustft.models import create_model

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    view = View("random_resized_crop", SIZE, hflip=True)
    attack = PGD(eps=4 / 255, steps=1, norm="linf")
    rates = {}
    for storage in ("disk", "memory", "disk"):  # disk twice: the first warms up the model and allocator
        torch.manual_seed(0)
        model = create_model("resnet50", num_classes=10).to(device).to(memory_format=torch.channels_last)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        data = load_splits(root, {"train_full": None}, image_size=SIZE, storage_size=STORAGE, storage=storage,
                           device=device)["train_full"]
        batches = iterate_batches(data, batch_size, shuffle=True, generator=torch.Generator().manual_seed(0),
                                  augment=view, drop_last=True, channels_last=True)
        start, done = time.perf_counter(), 0
        for x, y in batches:
            x_adv = attack.perturb(model, x, y)
            loss = torch.nn.functional.cross_entropy(model(x_adv), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            done += 1
            if done == steps:
                break
        if device.type == "cuda":
            torch.cuda.synchronize()
        rates[storage] = done * batch_size / (time.perf_counter() - start)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4, help="ResNet-50 training steps per storage")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    wall = time.perf_counter()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "folder"
        os.environ["ROBUSTFT_CACHE"] = str(Path(tmp) / "cache")  # a fresh store: nothing from earlier runs
        make_folder(root, args.images)
        paths = sorted(root.rglob("*.jpg"))
        workers = len(os.sched_getaffinity(0))
        decode = {"before_one_process_s": timed(decode_before, paths),
                  "now_one_process_s": timed(decode_now, root, 1),
                  f"now_{workers}_processes_s": timed(decode_now, root, workers)}
        decode = {**decode, **{k.replace("_s", "_images_per_s"): len(paths) / v for k, v in decode.items()}}
        decode["speedup_all_cores_vs_before"] = decode["before_one_process_s"] / decode[f"now_{workers}_processes_s"]
        os.environ.pop("ROBUSTFT_DECODE_WORKERS")
        rates = data_path(root, args.batch_size)
        rates["disk_vs_memory"] = rates["disk"] / rates["memory"]
        rates["disk_vs_seed_style"] = rates["disk"] / rates["seed_style_dataloader_2_workers"]
        rss = peak_rss(root, args.batch_size)
        resnet = resnet50_steps(root, args.batch_size, args.steps)
    record = {
        "what": "issue #23's data-path measurements on one synthetic folder of JPEGs of 300-500 px (see bench/data_path.py)",
        "images": args.images, "batch_size": args.batch_size, "image_size": SIZE, "storage_size": STORAGE,
        "decode": decode, "data_path_epoch2_images_per_s": rates, "peak_rss_3x_budget": rss,
        "resnet50_pgd1_step_images_per_s": {**resnet, "steps": args.steps},
        "load_average_before": load_before, "load_average_after": os.getloadavg(),
        "wall_s": time.perf_counter() - wall, "provenance": provenance(),
    }
    atomic_write_json(record, args.out)
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
