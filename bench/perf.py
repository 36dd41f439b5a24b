"""Training throughput, peak memory and MRC speed, side by side in one run on one machine.

(a) Adversarial fine-tuning throughput (training images/s) of each method through the real engine
(`robustft.engine.fit`: uint8 data on the device, batched tensor augmentation, channels_last, eval-mode guard inside
the attack; multi-stage methods run their last, fine-tuning stage only), compared with
  (1) a plain PyTorch PGD-AT loop written the way the seed research code is: it mirrors TWINS' `train-AT.py` +
      `FastGradientSignUntargeted`: a DataLoader with per-sample crop/flip transforms, NCHW tensors, `model.eval()`
      before and `model.train()` after every attack, attack-then-train (with --amp under the same bf16 autocast);
  (2) the pass-count bound: a PGD-K step costs about (2K+3)/3 clean training steps (K forward+backward attack passes
      ≈ 2K forward-equivalents, plus the training forward+backward ≈ 3), so an adversarial method's bound is the
      measured clean `standard` throughput × 3/(2K+3).
Every method trains the same model (random init: speed does not depend on the weights) on the same random uint8
images with the same batch size and K.
(b) RiFT's MRC profile, fast vs reference implementation (`compare` of bench/mrc_speed.py, on --mrc-n examples).
(c) Memory: each method (and the seed-style loop) runs in a fresh subprocess (`--worker NAME`) that warms up on two
batches, times one epoch, and reports its peak resident set size (on CUDA: peak allocated memory) and the increase
over the level right before training started.

Writes <out-dir>/perf.json and <out-dir>/perf.md. Usage: python bench/perf.py [--steps 10] [--images 1280]
[--batch-size 128] [--methods a,b,...] [--mrc-n 256] [--out-dir bench/results]; on a GPU, e.g.
python bench/perf.py --arch resnet50 --image-size 224 --methods pgd_at,twins --amp
"""

import argparse
import importlib.util
import json
import os
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from robustft._io import atomic_write, atomic_write_json
from robustft.attacks import PGD
from robustft.data import ArrayDataset
from robustft.engine import DistInfo, fit, from_dict
from robustft.engine.config import RunConfig
from robustft.engine.train import autocast_for
from robustft.methods import RunContext, create_method, list_methods
from robustft.models import create_model
from robustft.runtime import provenance, resolve_device

RESULTS = Path(__file__).parent / "results"
SEED_STYLE = "seed_style"
# label -> (registered method, method_args); any other registered method name stands for itself
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "ranli_lora": ("ranli", {"peft": "lora"}), "ranli_bias": ("ranli", {"peft": "bias"})}
DEFAULT_METHODS = ("standard", "pgd_at", "trades", "adv_linear_probe", "twins", "twins_trades", "ranli_lora",
                   "ranli_bias")


def spec(label: str) -> tuple[str, dict[str, Any]]:
    """The registered method and its options a --methods label stands for."""
    name, method_args = VARIANTS.get(label, (label, {}))
    if name not in list_methods():
        raise ValueError(f"unknown method {label!r}: use {', '.join(VARIANTS)} or one of {', '.join(list_methods())}")
    return name, method_args


def describe(label: str) -> dict[str, Any]:
    """What a row measures: the registered method, its options and its training objective."""
    name, method_args = ("pgd_at", {}) if label == SEED_STYLE else spec(label)
    return {"method": name, "method_args": method_args,
            "objective": create_method(name, PGD(), **method_args).cfg.objective}


def random_data(n: int, size: int) -> ArrayDataset:
    """``n`` random uint8 images of ``size``² pixels with 10 random labels (seeded: the same in every process)."""
    g = torch.Generator().manual_seed(0)
    return ArrayDataset(x=torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8),
                        y=torch.randint(0, 10, (n,), generator=g), classes=[str(i) for i in range(10)], name="random")


class _PerSampleCrop(Dataset):
    """What a torchvision RandomCrop(size, 4) + RandomHorizontalFlip + ToTensor pipeline does, one image at a time."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        size = self.x.shape[-1]
        img = F.pad(self.x[i].float() / 255, (4, 4, 4, 4))
        top, left = torch.randint(0, 9, (2,)).tolist()
        img = img[:, top:top + size, left:left + size]
        if torch.rand(()) < 0.5:
            img = img.flip(-1)
        return img, self.y[i]


def seed_style_epoch(data: ArrayDataset, steps: int, batch_size: int, arch: str, device: torch.device,
                     amp: str) -> float:
    """One epoch of the seed code's loop; returns images/s."""
    model = create_model(arch, num_classes=data.num_classes).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    loader = DataLoader(_PerSampleCrop(data.x.cpu(), data.y.cpu()), batch_size=batch_size, shuffle=True,
                        drop_last=True)
    autocast, _ = autocast_for(device, amp)
    eps, alpha = 8 / 255, 2 / 255
    start, n = time.perf_counter(), 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        model.train()
        # attack (FastGradientSignUntargeted.perturb): eval, PGD with autograd.grad on x, back to train
        adv = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)
        adv.requires_grad = True
        model.eval()
        for _ in range(steps):
            with autocast():
                loss = F.cross_entropy(model(adv), y)
            grad = torch.autograd.grad(loss, adv, only_inputs=True)[0]
            adv.data += alpha * torch.sign(grad.data)
            adv = torch.max(torch.min(adv, x + eps), x - eps).clamp(0, 1)
        model.train()
        with autocast():
            loss = F.cross_entropy(model(adv), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        n += len(y)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return n / (time.perf_counter() - start)


def engine_epoch(data: ArrayDataset, label: str, steps: int, batch_size: int, arch: str, device: torch.device,
                 amp: str) -> float:
    """One epoch of ``robustft.engine.fit`` with method ``label`` (built as ``robustft.engine.run`` builds it, last
    stage only); returns its measured training images/s."""
    name, method_args = spec(label)
    cfg = from_dict(RunConfig, {"method": name, "method_args": method_args, "model": {"arch": arch},
                                "data": {"name": "bench", "batch_size": batch_size},
                                "attack": {"steps": steps, "step_size": "2/255"},
                                "optim": {"lr": 0.01, "schedule": "constant"}, "eval": {"val_steps": 1},
                                "train": {"epochs": 1, "device": str(device), "amp": amp, "channels_last": True}})
    model = create_model(arch, num_classes=data.num_classes).to(device, memory_format=torch.channels_last)
    method = create_method(name, PGD(steps=steps, step_size=2 / 255, name="pgd_train"), **method_args)
    val = data.subset(range(8))
    with tempfile.TemporaryDirectory() as tmp:
        ctx = RunContext(train=data, val=val, cfg=cfg, run_dir=Path(tmp), device=device, log=lambda s: None,
                         source_state={k: v.detach().clone() for k, v in model.state_dict().items()})
        method.setup(model, ctx)
        stage = method.stages()[-1]
        result = fit(stage.method, stage.method.prepare(model), data, val, cfg, Path(tmp), DistInfo(0, 1, device),
                     log=lambda s: None)
    return result.history[0]["train_images_per_s"]


def _memory_mib(device: torch.device) -> float:
    """Memory in use now: CUDA allocated on a GPU, else this process's resident set size."""
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device) / 2**20
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mib(device: torch.device) -> float:
    """Peak memory so far: CUDA max allocated on a GPU, else peak RSS (``ru_maxrss``, KiB on Linux)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(args: argparse.Namespace) -> dict[str, Any]:
    """Measure one method (or the seed-style loop) in this fresh process: two warm-up batches, one timed epoch."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    amp = "bf16" if args.amp else "off"
    torch.manual_seed(0)
    data = random_data(args.images, args.image_size)
    common = dict(steps=args.steps, batch_size=args.batch_size, arch=args.arch, device=device, amp=amp)
    if args.worker == SEED_STYLE:
        measure = partial(seed_style_epoch, **common)
    else:
        measure, data = partial(engine_epoch, label=args.worker, **common), data.to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    before = _memory_mib(device)
    measure(data.subset(range(min(len(data), 2 * args.batch_size))))  # warm-up: allocator, code paths
    images_per_s = measure(data)
    peak = _peak_mib(device)
    return {"images_per_s": images_per_s, "peak_mib": peak, "increase_mib": peak - before,
            "torch_threads": torch.get_num_threads()}


def run_worker(label: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run ``worker`` for ``label`` in a fresh Python process; returns its JSON line."""
    argv = [sys.executable, str(Path(__file__).resolve()), "--worker", label, "--steps", str(args.steps),
            "--images", str(args.images), "--batch-size", str(args.batch_size), "--device", args.device,
            "--arch", args.arch, "--image-size", str(args.image_size)]
    argv += ["--amp"] if args.amp else []
    argv += ["--threads", str(args.threads)] if args.threads else []
    out = subprocess.run(argv, stdout=subprocess.PIPE, text=True, check=True).stdout
    return json.loads(out.splitlines()[-1])


def mrc_compare(n: int, device: torch.device) -> dict[str, Any]:
    """bench/mrc_speed.py's fast-vs-reference MRC comparison on ``n`` examples (bench/ is not a package)."""
    module_spec = importlib.util.spec_from_file_location("mrc_speed", Path(__file__).with_name("mrc_speed.py"))
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.compare(n, device=device, log=lambda s: print(f"mrc {s}", flush=True))


def _fmt(value: float | None, fmt: str) -> str:
    """A table cell: ``value`` formatted, or a dash for not applicable."""
    return "—" if value is None else format(value, fmt)


def _row_name(label: str, row: dict[str, Any]) -> str:
    """A method's name in the table: registered name, options, and whether it trains clean."""
    if label == SEED_STYLE:
        return "seed-style pgd_at loop"
    options = ", ".join(f"{k}={v}" for k, v in row["method_args"].items())
    return row["method"] + (f" ({options})" if options else "") + (" (clean)" if row["objective"] == "clean" else "")


def markdown(record: dict[str, Any]) -> str:
    """The human-readable report of ``record``."""
    k, mem = record["pgd_steps"], "CUDA allocated" if record["device"].startswith("cuda") else "RSS"
    lines = [
        "# Training throughput, memory and MRC speed", "",
        f"{record['arch']} (random init), {record['image_size']} px, batch {record['batch_size']}, PGD-{k} "
        f"(ε 8/255, step 2/255), one epoch of {record['images']} random uint8 images after a 2-batch warm-up, "
        f"{record['device']}, {'bf16 autocast' if record['amp'] else 'fp32'}, "
        f"{record['torch_threads']} torch threads; each row in its own fresh process.", "",
        f"| method | img/s | × seed-style | fraction of (2K+3)/3 bound | peak {mem} MiB | Δ {mem} MiB |",
        "|---|---|---|---|---|---|"]
    for label, r in record["methods"].items():
        lines.append(f"| {_row_name(label, r)} | {r['images_per_s']:.1f} | {_fmt(r['x_seed_style'], '.2f')} | "
                     f"{_fmt(r['fraction_of_bound'], '.2f')} | {r['peak_mib']:.0f} | {r['increase_mib']:.0f} |")
    lines += [
        "", f"Bound: measured `standard` (clean) × 3/(2K+3) = {record['bound_images_per_s']:.1f} img/s for K = {k} "
        "(K attack forward+backward passes ≈ 2K forward-equivalents, plus the training forward+backward ≈ 3). The same "
        "formula for every method: `trades` and `twins_trades` do more (an extra clean forward for the KL attack's "
        "target and a clean forward+backward in the loss), so their fraction is lower by construction; "
        "`adv_linear_probe` (no backward into the frozen backbone) and `ranli` with bias/LoRA (no weight gradients "
        "of the frozen weights) do less in the training step. A fraction above 1 means an attack pass costs less "
        "than the model assumes: the engine attacks a BN-folded eval-mode view (conv+BN as one conv) and takes "
        "gradients w.r.t. the input only. × seed-style: images/s over the "
        "seed-style PGD-AT loop's. Δ: increase over the level right before training started (model, optimizer "
        "state, activations, attack buffers).", ""]
    if record["mrc"] is not None:
        m = record["mrc"]
        lines += [f"MRC (RiFT): {len(m['modules'])} modules of the shared robust ResNet-20 on {m['examples']}, "
                  f"{m['steps']} ascent steps: fast {m['wall_s']['fast']:.1f} s vs reference "
                  f"{m['wall_s']['reference']:.1f} s wall ({m['speedup_wall']:.2f}× faster, CPU time "
                  f"{m['speedup_cpu']:.2f}×); identical ranking: {'yes' if m['ranking_identical'] else 'no'} "
                  f"(Kendall τ {m['kendall_tau']:.3f}, largest MRC difference {m['max_abs_mrc_diff']:.2e}).", ""]
    p = record["provenance"]
    lines += [f"Command: `{record['command']}`  ", f"Wall time: {record['wall_s']:.0f} s  ",
              f"Machine: {p['platform']}, {p['cpu_count']} CPUs, CUDA device {p['cuda_device']}; torch {p['torch']}, "
              f"Python {p['python']}, robustft {p['robustft']} ({p['git_sha']}), {p['time_utc']}", ""]
    return "\n".join(lines)


def main() -> None:
    """Measure every method in its own process, the seed-style loop and MRC, and write the results."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10, help="PGD steps K per training step")
    parser.add_argument("--images", type=int, default=1280, help="images per measured epoch")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                        help=f"comma-separated methods (registered names or {', '.join(VARIANTS)}); standard, the "
                             f"bound's reference, is always measured")
    parser.add_argument("--mrc-n", type=int, default=256, help="examples of the MRC comparison (0: skip it)")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--arch", default="cifar_resnet20", help="architecture (random init)")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--amp", action="store_true", help="bf16 autocast (engine and seed-style loop)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--report-only", action="store_true", help="rewrite perf.md from <out-dir>/perf.json")
    args = parser.parse_args()
    if args.images < args.batch_size:
        parser.error(f"--images {args.images} must be at least --batch-size {args.batch_size}")
    if args.worker:
        print(json.dumps(worker(args)))
        return
    if args.report_only:
        record = json.loads((args.out_dir / "perf.json").read_text())
        atomic_write(args.out_dir / "perf.md", lambda tmp: Path(tmp).write_text(markdown(record)))
        return
    labels = list(dict.fromkeys(["standard", *args.methods.split(",")]))
    try:
        rows = {label: describe(label) for label in [SEED_STYLE, *labels]}
    except ValueError as e:
        parser.error(str(e))
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    start = time.perf_counter()
    for label, r in rows.items():
        r.update(run_worker(label, args))
        print(f"{label:<18} {r['images_per_s']:8.1f} img/s  peak {r['peak_mib']:7.0f} MiB  (+{r['increase_mib']:.0f})",
              flush=True)
    bound = rows["standard"]["images_per_s"] * 3 / (2 * args.steps + 3)
    seed_style = rows[SEED_STYLE]["images_per_s"]
    for r in rows.values():
        adversarial = r["objective"] != "clean"
        r["x_seed_style"] = r["images_per_s"] / seed_style if adversarial else None
        r["fraction_of_bound"] = r["images_per_s"] / bound if adversarial else None
    mrc = mrc_compare(args.mrc_n, device) if args.mrc_n else None
    record = {"what": "adversarial fine-tuning training images/s per method (engine) vs a seed-style loop and the "
                      "(2K+3)/3 pass-count bound, peak memory per method, MRC fast vs reference",
              "arch": args.arch, "image_size": args.image_size, "device": str(device), "amp": args.amp,
              "pgd_steps": args.steps, "batch_size": args.batch_size, "images": args.images,
              "torch_threads": rows["standard"]["torch_threads"],
              "memory": "CUDA max_memory_allocated" if device.type == "cuda" else "RSS (ru_maxrss peak)",
              "bound": "standard images/s × 3/(2K+3)", "bound_images_per_s": bound, "methods": rows, "mrc": mrc,
              "command": f"python {shlex.join(sys.argv)}", "wall_s": time.perf_counter() - start,
              "provenance": provenance(0)}
    atomic_write_json(record, args.out_dir / "perf.json")
    atomic_write(args.out_dir / "perf.md", lambda tmp: Path(tmp).write_text(markdown(record)))
    print(markdown(record))


if __name__ == "__main__":
    main()
