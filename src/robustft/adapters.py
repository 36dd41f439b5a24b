"""Adapter-only exports: the parameter-efficient weights of a run (LoRA factors, adapters) and its head, without the
backbone they were trained on, and loading them back onto that backbone (PEFT's ``save_pretrained`` /
``PeftModel.from_pretrained`` habit).

A run's ``model.pt`` holds LoRA merged into the weights (``finalize``), so the factors come from the weights its last
stage selected (``best.pt``), which hold the structure the method trained. Which keys are PEFT keys is found by module
type on the architecture as the method prepares it, never by name. The file's card (same stem, ``.json``, marked
``robustft_adapter``) states the architecture, method and options to rebuild that structure, the class names, the
input normalization and the base checkpoint the run started from.
"""

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._io import atomic_write_json, check_writable
from .card import MAX_CARD_BYTES, card_options, read_card
from .errors import UserError
from .layout import RunLayout
from .methods import create_method
from .methods.peft import adapter_modules, lora_layers
from .models import (
    ImageClassifier,
    create_model,
    load_state_dict_into,
    read_state_dict,
    set_normalization,
    write_state_dict,
)
from .models.checkpoint import _state_keys

__all__ = ["ADAPTER_MARKER", "peft_state_keys", "export_adapters", "load_adapters"]

ADAPTER_MARKER = "robustft_adapter"


def peft_state_keys(model: ImageClassifier) -> set[str]:
    """State-dict keys of ``model``'s LoRA factors and adapters (found by module type) and of its head."""
    modules = [m for layer in lora_layers(model) for m in (layer.lora_A, layer.lora_B)]
    return _state_keys(model, [*modules, *adapter_modules(model), model.get_classifier()])


def _prepared(card: dict[str, Any]) -> ImageClassifier:
    """The card's architecture as its method trains it (PEFT layers attached), without allocating its weights."""
    method = create_method(card["method"], **card["method_args"])
    with torch.device("meta"):
        return method.prepare(create_model(card["arch"], card["num_classes"], **card["options"]))


def export_adapters(run_dir: str | Path, out: str | Path) -> Path:
    """Write the LoRA factors / adapters and the head of the finished run ``run_dir`` to ``out`` (.safetensors or
    .pt) with its adapter card beside it; the backbone stays in the base checkpoint. Returns ``out``."""
    out, layout = Path(out), RunLayout(Path(run_dir))
    if out.suffix not in (".safetensors", ".pt", ".pth"):
        raise UserError(f"--out {out}: name a .safetensors, .pt or .pth file for the adapter weights")
    card = read_card(layout.model)
    if card is None:
        raise UserError(f"{run_dir} has no exported model with its card: --adapter-only takes a finished run directory")
    recipe = card["recipe"]
    adapter_card = {ADAPTER_MARKER: 1, "arch": card["arch"], "num_classes": card["num_classes"],
                    "classes": card["classes"], "method": card["method"], "method_args": recipe.get("method_args", {}),
                    "options": card_options(card), "normalize": card["normalize"],
                    "base_checkpoint": card["source_checkpoint"]}
    prepared = _prepared(adapter_card)
    if not (lora_layers(prepared) or adapter_modules(prepared)):
        raise UserError(f"{run_dir}: method {card['method']} with {adapter_card['method_args'] or 'its defaults'} "
                        f"trains no LoRA or adapters; export the whole model (robustft export RUN_DIR --out FILE)")
    keys = peft_state_keys(prepared)
    stages = layout.stage_names()
    selected = layout.stage_named(stages[-1]).best if stages else layout.best
    state = read_state_dict(selected)
    if missing := sorted(keys - state.keys()):
        raise UserError(f"{selected} lacks the {card['method']} weights {', '.join(missing[:3])}: it is not the "
                        f"structure the method trains")
    check_writable(out)
    write_state_dict({k: state[k] for k in sorted(keys)}, out)
    adapter_card["state_dict_keys"] = {k: list(state[k].shape) for k in sorted(keys)}
    atomic_write_json(adapter_card, out.with_suffix(".json"))
    return out


def load_adapters(model: nn.Module, path: str | Path) -> ImageClassifier:
    """``model`` (the base, any head) with the method's PEFT layers attached, a head for the adapter's classes, and
    the adapter file ``path`` loaded into them: every PEFT and head key must be in the file, and nothing else."""
    path = Path(path)
    card_path = path.with_suffix(".json")
    if not card_path.is_file() or card_path.stat().st_size > MAX_CARD_BYTES:
        raise UserError(f"--adapter {path}: no adapter card {card_path.name} beside it (robustft export --adapter-only "
                        f"writes both)")
    try:
        card = json.loads(card_path.read_text(errors="replace"))
    except json.JSONDecodeError as e:
        raise UserError(f"{card_path} is a damaged adapter card ({e})") from None
    if not isinstance(card, dict) or card.get(ADAPTER_MARKER) != 1:
        raise UserError(f"{card_path} is not a robustft adapter card (no {ADAPTER_MARKER!r} marker)")
    if not isinstance(model, ImageClassifier) or model.pretrained_cfg.architecture != card["arch"]:
        name = model.pretrained_cfg.architecture if isinstance(model, ImageClassifier) else type(model).__name__
        raise UserError(f"--adapter {path} was trained on --arch {card['arch']}, not {name}")
    model.reset_classifier(card["num_classes"])
    model = create_method(card["method"], **card["method_args"]).prepare(model)
    keys = peft_state_keys(model)
    state = read_state_dict(path)
    if state.keys() != keys:
        differ = sorted(state.keys() ^ keys)
        raise UserError(f"--adapter {path} does not fit {card['arch']} with {card['method']} "
                        f"{card['method_args']} (key {differ[0]}; {len(differ)} differing)")
    load_state_dict_into(model, state, strict=False)
    if isinstance(card.get("normalize"), dict):  # the statistics the run trained with
        set_normalization(model, (card["normalize"]["mean"], card["normalize"]["std"]))
    return model
