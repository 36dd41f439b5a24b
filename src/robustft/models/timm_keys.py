"""Robust ViT/Swin checkpoints in timm and ARES layouts, mapped onto robustft's ``VisionTransformer`` and
``SwinTransformer``.

Layouts handled, each checked against the code that writes or reads it:

- **plain timm state dict** — the ARES 2.0 releases (``ARES_{ViT,Swin}_{small,base,large}_*_AT.pth``):
  thu-ml/ares ``ares/model/imagenet_cls.py`` loads them with a strict ``load_state_dict`` into
  ``timm.create_model(name)``, and RoLI's ``vit.py::adv_load_from`` reads the ViT-B file's ``patch_embed.proj``,
  ``cls_token``, ``pos_embed``, ``norm`` and ``blocks.*`` keys. Swin files are in the timm < 0.9 layout (RoLI loads
  them into Microsoft's Swin, whose stage-end downsample shapes differ from timm >= 0.9's). Our models use exactly
  these names, so the files load without change (Swin: with or without the ``relative_position_index`` /
  ``attn_mask`` buffers; missing ones are filled from the model, they are constants).
- **timm >= 0.9 Swin** (``head.fc.*``, ``layers.<i>.downsample`` at the start of stage i >= 1, buffers not saved):
  the inverse of timm's ``swin_transformer.checkpoint_filter_fn`` renaming.
- **ARES model wrapper** — ``ImageNetCLS(normalize=True)`` holds ``model = nn.Sequential(NormalizeByChannelMeanStd,
  timm_model)``: keys ``model.0.mean`` / ``model.0.std`` (shape [3]) and ``model.1.*`` (``model.`` may already be
  stripped by ``read_state_dict``).
- **RobustBench** ``normalize_model`` (how RobustBench serves ARES's ``Liu2023Comprehensive_Swin-B/L`` and
  ConvNeXts): ``normalize.mean`` / ``normalize.std`` ([1, 3, 1, 1]) and ``model.*``.
- wrappers ``module.`` / ``_orig_mod.`` and the ``state_dict`` / ``model`` / ``state_dict_ema`` nesting of timm
  ``CheckpointSaver`` files, through ``unwrap_state_dict``. (Full timm training checkpoints also pickle the argparse
  ``args``, which ``read_state_dict`` refuses to unpickle; re-save their ``state_dict`` entry.)

The normalizer of a wrapped checkpoint becomes our ``normalize`` buffers, so its statistics travel with the weights.
"""

import re
from typing import Any

import torch
from torch import Tensor, nn

from robustft.errors import UserError
from robustft.models.checkpoint import read_state_dict, unwrap_state_dict
from robustft.models.swin import SwinBlock, SwinTransformer, WindowAttention

__all__ = ["from_timm_layout", "read_timm_checkpoint"]


def _normalizer(state: dict[str, Tensor], norm_prefix: str, net_prefix: str) -> dict[str, Tensor] | None:
    """``{norm_prefix}mean/std`` + ``{net_prefix}*`` (and nothing else) -> ``normalize.*`` + network keys."""
    norm_keys = {f"{norm_prefix}mean", f"{norm_prefix}std"}
    if not norm_keys <= state.keys() or not all(k in norm_keys or k.startswith(net_prefix) for k in state):
        return None
    out = {k.removeprefix(net_prefix): v for k, v in state.items() if k not in norm_keys}
    for stat in ("mean", "std"):
        out[f"normalize.{stat}"] = state[f"{norm_prefix}{stat}"].float().reshape(1, -1, 1, 1)
    return out


def _swin_from_timm09(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """timm >= 0.9 Swin names -> the timm < 0.9 / Microsoft names our Swin uses."""
    out = {}
    for k, v in state.items():
        k = re.sub(r"^layers\.(\d+)\.downsample\.", lambda m: f"layers.{int(m.group(1)) - 1}.downsample.", k)
        out[k.replace("head.fc.", "head.", 1) if k.startswith("head.fc.") else k] = v
    return out


def _swin_buffers(model: SwinTransformer) -> dict[str, Tensor]:
    """The constant buffers every Swin checkpoint may or may not carry: relative position indices, shift masks."""
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, WindowAttention):
            out[f"{name}.relative_position_index"] = m.relative_position_index
        elif isinstance(m, SwinBlock) and m.attn_mask is not None:
            out[f"{name}.attn_mask"] = m.attn_mask
    return out


def from_timm_layout(obj: Any, model: nn.Module) -> dict[str, Tensor]:
    """A state dict for ``model`` (robustft ViT or Swin) from a checkpoint object in any layout listed above.

    ``obj`` is what ``torch.load`` returned (or a state dict); the result loads with
    ``load_state_dict_into(model, ...)``. Keys of a robustft checkpoint pass through unchanged.
    """
    state = unwrap_state_dict(obj)
    for norm_prefix, net_prefix in (("0.", "1."), ("model.0.", "model.1."), ("normalize.", "model.")):
        if (unwrapped := _normalizer(state, norm_prefix, net_prefix)) is not None:
            state = unwrapped
            break
    if isinstance(model, SwinTransformer):
        if "head.fc.weight" in state or (any(k.startswith("layers.1.downsample.") for k in state)
                                         and not any(k.startswith("layers.0.downsample.") for k in state)):
            state = _swin_from_timm09(state)
        buffers = _swin_buffers(model)
        stray = sorted(k for k in state if k.endswith((".relative_position_index", ".attn_mask")) and k not in buffers)
        if stray:
            raise UserError(f"checkpoint Swin buffers do not fit this model's windows: {', '.join(stray[:4])}")
        for k, v in buffers.items():
            if k in state and not torch.equal(state[k].to(v.device, v.dtype), v):
                raise UserError(f"checkpoint buffer {k} differs from this Swin's: window size or image size differ")
            state[k] = v.detach().clone()
    return state


def read_timm_checkpoint(path: str, model: nn.Module) -> dict[str, Tensor]:
    """``from_timm_layout`` of the checkpoint file at ``path`` (read safely, weights only)."""
    return from_timm_layout(read_state_dict(path), model)
