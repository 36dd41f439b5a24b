"""Training throughput, achieved FLOP rate against the machine's peak, peak memory and MRC speed, side by side in one
run on one machine, in fp32 and in bf16 autocast.

(a) Adversarial fine-tuning throughput (training images/s) of each method through the real engine
(`robustft.engine.fit`: uint8 data on the device, batched tensor augmentation, channels_last, eval-mode guard inside
the attack; multi-stage methods run their last, fine-tuning stage only), compared with
  (1) a plain PyTorch PGD-AT loop written the way the seed research code is: it mirrors TWINS' `train-AT.py` +
      `FastGradientSignUntargeted`: a DataLoader with per-sample crop/flip transforms, NCHW tensors, `model.eval()`
      before and `model.train()` after every attack, attack-then-train, under the same precision;
  (2) the pass-count bound: a PGD-K step costs about (2K+3)/3 clean training steps (K forward+backward attack passes
      ≈ 2K forward-equivalents, plus the training forward+backward ≈ 3), so an adversarial method's bound is the
      measured clean `standard` throughput (same precision) × 3/(2K+3);
  (3) the roofline: the FLOPs one training step of the method really executes (every convolution and matrix product
      of its attack and training passes, forward and backward, counted with torch's FLOP formulas while one step
      runs), times images/s, against the machine's measured convolution peak at the model's own layer shapes and
      batch in the same precision (each conv timed alone, forward, channels_last; best of several repeats).
Every method trains the same model (random init: speed does not depend on the weights) on the same random uint8
images with the same batch size and K.
(b) RiFT's MRC profile, fast vs reference implementation (`compare` of bench/mrc_speed.py, on --mrc-n examples).
(c) Memory: each method (and the seed-style loop) runs in a fresh subprocess (`--worker NAME`) that warms up on two
batches, times one epoch, and reports its peak resident set size (on CUDA: peak allocated memory) and the increase
over the level right before training started.

Writes <out-dir>/perf.json and <out-dir>/perf.md. Usage: python bench/perf.py [--steps 10] [--images 1280]
[--batch-size 128] [--methods a,b,...] [--precisions fp32,bf16] [--mrc-n 256] [--out-dir bench/results]; on a GPU,
e.g. python bench/perf.py --arch resnet50 --image-size 224 --methods pgd_at,twins --precisions bf16
"""

import argparse
import contextlib
import importlib.util
import json
import os
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import flop_registry

from robustft._io import atomic_write, atomic_write_json
from robustft.attacks import PGD
from robustft.data import ArrayDataset
from robustft.engine import DistInfo, fit, from_dict
from robustft.engine.config import RunConfig
from robustft.engine.precision import autocast_for
from robustft.methods import Method, RunContext, create_method, list_methods
from robustft.models import create_model
from robustft.runtime import provenance, resolve_device

RESULTS = Path(__file__).parent / "results"
SEED_STYLE = "seed_style"
PRECISIONS = ("fp32", "bf16")
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


def _seed_style_model(arch: str, num_classes: int,
                      device: torch.device) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """The seed code's model (NCHW) and optimizer."""
    model = create_model(arch, num_classes=num_classes).to(device)
    return model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)


def _seed_style_step(model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, steps: int,
                     autocast: Callable[[], contextlib.AbstractContextManager]) -> None:
    """One training step of the seed code: its attack (FastGradientSignUntargeted.perturb: eval, PGD with
    autograd.grad on x, back to train), then the training forward/backward/step."""
    eps, alpha = 8 / 255, 2 / 255
    model.train()
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


def seed_style_epoch(data: ArrayDataset, steps: int, batch_size: int, arch: str, device: torch.device,
                     amp: str) -> float:
    """One epoch of the seed code's loop; returns images/s."""
    model, opt = _seed_style_model(arch, data.num_classes, device)
    loader = DataLoader(_PerSampleCrop(data.x.cpu(), data.y.cpu()), batch_size=batch_size, shuffle=True,
                        drop_last=True)
    autocast, _ = autocast_for(device, amp)
    start, n = time.perf_counter(), 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        _seed_style_step(model, opt, x, y, steps, autocast)
        n += len(y)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return n / (time.perf_counter() - start)


def _engine_config(label: str, steps: int, batch_size: int, arch: str, device: torch.device, amp: str) -> RunConfig:
    """The run config of method ``label`` for one measured epoch."""
    name, method_args = spec(label)
    return from_dict(RunConfig, {"method": name, "method_args": method_args, "model": {"arch": arch},
                                 "data": {"name": "bench", "batch_size": batch_size},
                                 "attack": {"steps": steps, "step_size": "2/255"},
                                 "optim": {"lr": 0.01, "schedule": "constant"}, "eval": {"val_steps": 1},
                                 "train": {"epochs": 1, "device": str(device), "amp": amp, "channels_last": True}})


@contextlib.contextmanager
def _engine_stage(data: ArrayDataset, cfg: RunConfig, device: torch.device) -> Iterator[tuple[Method, torch.nn.Module]]:
    """Method ``cfg.method`` set up as ``robustft.engine.run`` sets it up: (its last stage's method, the prepared
    channels_last model)."""
    steps = cfg.attack.steps
    model = create_model(cfg.model.arch, num_classes=data.num_classes).to(device, memory_format=torch.channels_last)
    method = create_method(cfg.method, PGD(steps=steps, step_size=2 / 255, name="pgd_train"), **cfg.method_args)
    with tempfile.TemporaryDirectory() as tmp:
        source = {k: v.detach().clone() for k, v in model.state_dict().items()}
        ctx = RunContext(train=data, val=data.subset(range(8)), cfg=cfg, run_dir=Path(tmp), device=device,
                         log=lambda s: None, source_state=source)
        method.setup(model, ctx)
        stage = method.stages()[-1].method
        yield stage, stage.prepare(model)


def engine_epoch(data: ArrayDataset, label: str, steps: int, batch_size: int, arch: str, device: torch.device,
                 amp: str) -> float:
    """One epoch of ``robustft.engine.fit`` with method ``label`` (last stage only); returns its measured training
    images/s."""
    cfg = _engine_config(label, steps, batch_size, arch, device, amp)
    with _engine_stage(data, cfg, device) as (method, model), tempfile.TemporaryDirectory() as tmp:
        result = fit(method, model, data, data.subset(range(8)), cfg, Path(tmp), DistInfo(0, 1, device),
                     log=lambda s: None)
    return result.history[0]["train_images_per_s"]


class _FlopCount(TorchDispatchMode):
    """Counts the FLOPs of every convolution and matrix product (forward and backward) dispatched inside it, with
    torch's own formulas (``torch.utils.flop_counter``); unlike FlopCounterMode it supports ``autograd.grad``."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.total += formula(*args, **kwargs, out_val=out)
        return out


def step_flops(label: str, data: ArrayDataset, steps: int, batch_size: int, arch: str, device: torch.device) -> float:
    """FLOPs per training image of one training step (attack and training passes) of ``label`` (engine) or of the
    seed-style loop, as executed (fp32 counts; autocast changes the speed, not the count)."""
    x, y = data.x[:batch_size].float().div(255), data.y[:batch_size]
    no_autocast = contextlib.nullcontext
    if label == SEED_STYLE:
        model, opt = _seed_style_model(arch, data.num_classes, device)
        with _FlopCount() as count:
            _seed_style_step(model, opt, x, y, steps, no_autocast)
        return count.total / batch_size
    cfg = _engine_config(label, steps, batch_size, arch, device, "off")
    with _engine_stage(data, cfg, device) as (method, model):
        method.train_mode(model)
        x = x.contiguous(memory_format=torch.channels_last)
        with _FlopCount() as count:
            loss, _ = method.loss(model, x, y, torch.Generator(device).manual_seed(0))
            loss.backward()
    return count.total / batch_size


def conv_peak(arch: str, image_size: int, batch_size: int, precision: str, device: torch.device,
              repeats: int = 5) -> dict[str, float]:
    """The machine's convolution rate at the model's own layers: every Conv2d of ``arch`` at its input shape for
    ``batch_size`` images, timed alone (forward, channels_last, ``precision``; the best of ``repeats`` after a
    warm-up); GFLOP/s = all layers' FLOPs / their summed best times. Also a 2048² matrix product for reference."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    model = create_model(arch, num_classes=10).to(device).eval()
    shapes: list[tuple[torch.nn.Conv2d, torch.Size]] = []
    hooks = [m.register_forward_pre_hook(lambda m, a: shapes.append((m, a[0].shape)))
             for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        model(torch.rand(1, 3, image_size, image_size, device=device))
    for h in hooks:
        h.remove()

    def best(fn: Callable[[], Any]) -> float:
        fn()
        times = []
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - t)
        return min(times)

    flops = seconds = 0.0
    with torch.no_grad():
        for conv, shape in shapes:
            x = torch.rand(batch_size, *shape[1:], device=device, dtype=dtype).contiguous(
                memory_format=torch.channels_last)
            w = conv.weight.detach().to(dtype).contiguous(memory_format=torch.channels_last)
            with _FlopCount() as count:
                out = F.conv2d(x, w, None, conv.stride, conv.padding, conv.dilation, conv.groups)
            del out
            flops += count.total
            seconds += best(lambda x=x, w=w, c=conv: F.conv2d(x, w, None, c.stride, c.padding, c.dilation, c.groups))
        a = torch.rand(2048, 2048, device=device, dtype=dtype)
        gemm_s = best(lambda: a @ a)
    return {"conv_gflops": flops / seconds / 1e9, "gemm_2048_gflops": 2 * 2048 ** 3 / gemm_s / 1e9,
            "layers": len(shapes)}


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
    """Measure one method (or the seed-style loop) in this fresh process: two warm-up batches, one timed epoch, then
    the FLOPs of one training step."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    amp = "bf16" if args.precision == "bf16" else "off"
    torch.manual_seed(0)
    data = random_data(args.images, args.image_size)
    common = dict(steps=args.steps, batch_size=args.batch_size, arch=args.arch, device=device)
    if args.worker == SEED_STYLE:
        measure = partial(seed_style_epoch, amp=amp, **common)
    else:
        data = data.to(device)
        measure = partial(engine_epoch, label=args.worker, amp=amp, **common)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    before = _memory_mib(device)
    measure(data.subset(range(min(len(data), 2 * args.batch_size))))  # warm-up: allocator, code paths
    images_per_s = measure(data)
    peak = _peak_mib(device)
    return {"images_per_s": images_per_s, "peak_mib": peak, "increase_mib": peak - before,
            "torch_threads": torch.get_num_threads(),
            "gflop_per_image": step_flops(args.worker, data.to(device), **common) / 1e9}


def run_worker(label: str, precision: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run ``worker`` for ``label`` in ``precision`` in a fresh Python process; returns its JSON line."""
    argv = [sys.executable, str(Path(__file__).resolve()), "--worker", label, "--precision", precision,
            "--steps", str(args.steps), "--images", str(args.images), "--batch-size", str(args.batch_size),
            "--device", args.device, "--arch", args.arch, "--image-size", str(args.image_size)]
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
    precisions = list(record["peak"])
    lines = [
        "# Training throughput, FLOP rate against the machine's peak, memory and MRC speed", "",
        f"{record['arch']} (random init), {record['image_size']} px, batch {record['batch_size']}, PGD-{k} "
        f"(ε 8/255, step 2/255), one epoch of {record['images']} random uint8 images after a 2-batch warm-up, "
        f"{record['device']}, {record['torch_threads']} torch threads, in {' and '.join(precisions)} "
        "(bf16: autocast of the training step — attack and training passes — for the engine and the seed-style loop "
        "alike); each row in its own fresh process, all in this one run.", "",
        "Machine peak, measured here: " + "; ".join(
            f"{p}: {v['conv_gflops']:.0f} GFLOP/s for the model's {v['layers']} convolutions at their own shapes "
            f"(batch {record['batch_size']}, forward, each timed alone), {v['gemm_2048_gflops']:.0f} GFLOP/s for a "
            "2048² matrix product" for p, v in record["peak"].items()) + ".", "",
        f"| method | precision | img/s | × seed-style fp32 | × seed-style same precision | fraction of (2K+3)/3 bound "
        f"| GFLOP per image | GFLOP/s | % of conv peak | peak {mem} MiB | Δ {mem} MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in record["rows"]:
        lines.append(f"| {_row_name(r['label'], r)} | {r['precision']} | {r['images_per_s']:.1f} | "
                     f"{_fmt(r['x_seed_style_fp32'], '.2f')} | {_fmt(r['x_seed_style'], '.2f')} | "
                     f"{_fmt(r['fraction_of_bound'], '.2f')} | {r['gflop_per_image']:.2f} | {r['gflops']:.0f} | "
                     f"{100 * r['fraction_of_peak']:.0f} | {r['peak_mib']:.0f} | {r['increase_mib']:.0f} |")
    lines += [
        "", "Bound: measured `standard` (clean, same precision) × 3/(2K+3) for K = "
        f"{k} (" + ", ".join(f"{p}: {v:.1f} img/s" for p, v in record["bound_images_per_s"].items()) + "; K attack "
        "forward+backward passes ≈ 2K forward-equivalents, plus the training forward+backward ≈ 3). The same "
        "formula for every method: `trades` and `twins_trades` do more (an extra clean forward for the KL attack's "
        "target and a clean forward+backward in the loss), so their fraction is lower by construction; "
        "`adv_linear_probe` (no backward into the frozen backbone) and `ranli` with bias/LoRA (no weight gradients "
        "of the frozen weights) do less in the training step. A fraction above 1 means an attack pass costs less "
        "than the model assumes: the engine attacks a BN-folded eval-mode view (conv+BN as one conv) and takes "
        "gradients w.r.t. the input only. GFLOP per image: what one training step executes per image (every "
        "convolution and matrix product of its attack and training passes, forward and backward, counted while it "
        "runs); GFLOP/s = that × img/s; % of conv peak: GFLOP/s over the convolution peak of the same precision "
        "above (what is left is memory-bound work — BN, activations, the attack's elementwise steps — and the "
        "backward convolutions, which run below the forward peak). × seed-style: images/s over the seed-style PGD-AT "
        "loop's, in fp32 and in the row's own precision. Δ: increase over the level right before training started "
        "(model, optimizer state, activations, attack buffers).", ""]
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
    """Measure every method in its own process in every precision, the seed-style loop, the machine's peak and MRC,
    and write the results."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10, help="PGD steps K per training step")
    parser.add_argument("--images", type=int, default=1280, help="images per measured epoch")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                        help=f"comma-separated methods (registered names or {', '.join(VARIANTS)}); standard, the "
                             f"bound's reference, is always measured")
    parser.add_argument("--precisions", default="fp32,bf16",
                        help="comma-separated training precisions among fp32, bf16 (bf16 autocast)")
    parser.add_argument("--mrc-n", type=int, default=256, help="examples of the MRC comparison (0: skip it)")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--arch", default="cifar_resnet20", help="architecture (random init)")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS, help=argparse.SUPPRESS)
    parser.add_argument("--report-only", action="store_true", help="rewrite perf.md from <out-dir>/perf.json")
    args = parser.parse_args()
    if args.images < args.batch_size:
        parser.error(f"--images {args.images} must be at least --batch-size {args.batch_size}")
    precisions = list(dict.fromkeys(args.precisions.split(",")))
    if not set(precisions) <= set(PRECISIONS):
        parser.error(f"--precisions {args.precisions}: choose among {', '.join(PRECISIONS)}")
    if args.worker:
        print(json.dumps(worker(args)))
        return
    if args.report_only:
        record = json.loads((args.out_dir / "perf.json").read_text())
        atomic_write(args.out_dir / "perf.md", lambda tmp: Path(tmp).write_text(markdown(record)))
        return
    labels = list(dict.fromkeys(["standard", *args.methods.split(",")]))
    try:
        described = {label: describe(label) for label in [SEED_STYLE, *labels]}
    except ValueError as e:
        parser.error(str(e))
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    peak: dict[str, dict[str, float]] = {}
    for precision in precisions:
        peak[precision] = conv_peak(args.arch, args.image_size, args.batch_size, precision, device)
        print(f"peak {precision}: {peak[precision]['conv_gflops']:.0f} GFLOP/s conv, "
              f"{peak[precision]['gemm_2048_gflops']:.0f} GFLOP/s 2048² GEMM", flush=True)
        for label, d in described.items():
            r = {"label": label, "precision": precision, **d, **run_worker(label, precision, args)}
            rows.append(r)
            print(f"{label:<18} {precision} {r['images_per_s']:8.1f} img/s  peak {r['peak_mib']:7.0f} MiB  "
                  f"(+{r['increase_mib']:.0f})", flush=True)

    def find(label: str, precision: str) -> dict[str, Any] | None:
        return next((r for r in rows if r["label"] == label and r["precision"] == precision), None)

    bounds = {p: find("standard", p)["images_per_s"] * 3 / (2 * args.steps + 3) for p in precisions}
    for r in rows:
        adversarial = r["objective"] != "clean"
        fp32 = find(SEED_STYLE, "fp32")
        same = find(SEED_STYLE, r["precision"])
        r["x_seed_style"] = r["images_per_s"] / same["images_per_s"] if adversarial else None
        r["x_seed_style_fp32"] = r["images_per_s"] / fp32["images_per_s"] if adversarial and fp32 else None
        r["fraction_of_bound"] = r["images_per_s"] / bounds[r["precision"]] if adversarial else None
        r["gflops"] = r["gflop_per_image"] * r["images_per_s"]
        r["fraction_of_peak"] = r["gflops"] / peak[r["precision"]]["conv_gflops"]
    mrc = mrc_compare(args.mrc_n, device) if args.mrc_n else None
    record = {"what": "adversarial fine-tuning training images/s per method (engine) vs a seed-style loop, the "
                      "(2K+3)/3 pass-count bound and the measured convolution peak, per precision; peak memory per "
                      "method, MRC fast vs reference",
              "arch": args.arch, "image_size": args.image_size, "device": str(device), "precisions": precisions,
              "pgd_steps": args.steps, "batch_size": args.batch_size, "images": args.images,
              "torch_threads": rows[0]["torch_threads"],
              "memory": "CUDA max_memory_allocated" if device.type == "cuda" else "RSS (ru_maxrss peak)",
              "bound": "standard images/s × 3/(2K+3)", "bound_images_per_s": bounds, "peak": peak, "rows": rows,
              "mrc": mrc, "command": f"python {shlex.join(sys.argv)}", "wall_s": time.perf_counter() - start,
              "provenance": provenance(0)}
    atomic_write_json(record, args.out_dir / "perf.json")
    atomic_write(args.out_dir / "perf.md", lambda tmp: Path(tmp).write_text(markdown(record)))
    print(markdown(record))


if __name__ == "__main__":
    main()
