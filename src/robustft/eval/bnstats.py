"""How far a dataset's batch-norm statistics are from the ones a model stored: per BN layer, the statistics of the
layer's input on the data (the model in eval mode, so each layer sees what the stored statistics normalize) against
its running mean and variance. TWINS' frozen wing keeps the stored statistics; this says whether there was anything
to keep."""

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..data import ArrayDataset, iterate_batches

__all__ = ["BNDistance", "bn_stat_distance"]


@dataclass
class BNDistance:
    """One BN layer: mean over channels of |μ_data − μ_stored| / σ_stored and of |log(σ²_data / σ²_stored)|."""

    layer: str
    mean_shift: float
    log_var_ratio: float

    def to_dict(self) -> dict[str, float | str]:
        """JSON-ready."""
        return asdict(self)


@torch.no_grad()
def bn_stat_distance(model: nn.Module, data: ArrayDataset, batch_size: int = 500) -> list[BNDistance]:
    """Per BN layer of ``model`` (in module order), the distance between the statistics of its input on ``data``
    (exact over every image: sums of x and x² per channel) and its running statistics."""
    layers = {name: m for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
              and m.running_mean is not None and m.running_var is not None}
    if not layers:
        raise ValueError("the model has no batch-norm layer with running statistics")
    sums: dict[str, list[torch.Tensor]] = {}

    def hook(name: str):
        def accumulate(_: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            x = inputs[0].double().transpose(0, 1).flatten(1)  # channels × (N·H·W)
            acc = [x.sum(1), (x * x).sum(1), torch.tensor(float(x.shape[1]), dtype=torch.float64)]
            sums[name] = [a + b for a, b in zip(sums[name], acc, strict=True)] if name in sums else acc
        return accumulate

    handles = [m.register_forward_pre_hook(hook(name)) for name, m in layers.items()]
    was_training = model.training
    model.eval()
    try:
        for x, _ in iterate_batches(data, batch_size):
            model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    out = []
    for name, m in layers.items():
        s, s2, count = sums[name]
        mean = s / count
        var = (s2 / count - mean * mean).clamp_min(0)
        stored_mean, stored_var = m.running_mean.double(), m.running_var.double()
        shift = ((mean - stored_mean).abs() / (stored_var + m.eps).sqrt()).mean().item()
        ratio = ((var + m.eps) / (stored_var + m.eps)).log().abs().mean().item()
        out.append(BNDistance(name, shift, ratio if math.isfinite(ratio) else float("inf")))
    return out
