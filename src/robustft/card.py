"""The model card of an export, below the engine: write it, read it back, rebuild the model it describes, and the plain
export for other code. Loading an exported model (``robustft.load_model``) imports this, never the training engine."""

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._io import atomic_write_json, check_writable
from .errors import UserError
from .layout import resolve_weights
from .methods import create_method
from .models import (
    ImageClassifier,
    NormSpec,
    create_model,
    from_timm_layout,
    load_checkpoint,
    load_weights,
    read_state_dict,
    resolve_normalization,
    write_state_dict,
)
from .models.export import timm_config, timm_state_dict

__all__ = ["CARD_MARKER", "MAX_CARD_BYTES", "write_card", "read_card", "card_options", "card_inputs",
           "load_exported_model", "export_plain"]

CARD_MARKER, CARD_VERSION = "robustft_card", 1  # only a JSON carrying the marker is a card; others are not ours
MAX_CARD_BYTES = 16 << 20  # a card is a few kB (its state-dict key list); a larger JSON is not read


def write_card(model: nn.Module, recipe: dict[str, Any], classes: list[str], path: Path, metrics: dict[str, Any], *,
               precision: dict[str, str], data: dict[str, Any]) -> None:
    """The JSON card of ``model`` exported by the run of ``recipe`` (its config as a dict), like the shared reference
    model's, stating the run's resolved ``precision`` and ``data``. A plain ``nn.Module``'s card states no
    normalization: robustft cannot see its preprocessing."""
    sd = model.state_dict()
    ours = isinstance(model, ImageClassifier)
    card = {CARD_MARKER: CARD_VERSION, "arch": recipe["model"]["arch"], "num_classes": len(classes), "classes": classes,
            "input": "float RGB in [0,1], NCHW; " + ("normalization inside the model (normalize.mean / normalize.std)"
                                                   if ours else "any preprocessing is the fine-tuned module's own"),
            "normalize": {**{k: sd[f"normalize.{k}"].flatten().tolist() for k in ("mean", "std")},
                          "source": model.pretrained_cfg.normalization_source} if ours else None,
            "source_checkpoint": recipe["model"]["checkpoint"], "method": recipe["method"], "recipe": recipe,
            "precision": precision, "data": data, "metrics": metrics,
            "format": "torch.save of a plain state_dict (loads with torch.load(weights_only=True))",
            "state_dict_keys": {k: list(v.shape) for k, v in sd.items()}}
    if metrics.get("val", {}).get("exploded"):
        card["warning"] = (f"the selected epoch {metrics['val']['epoch']} exploded (training loss far above the first "
                           f"epoch's, validation at chance): this model is likely unusable; retrain with a lower lr")
    atomic_write_json(card, path)


def read_card(checkpoint: str | Path) -> dict[str, Any] | None:
    """The robustft export card beside ``checkpoint`` (same stem, ``.json``), or None when there is none.

    A JSON file there that does not carry the card marker (a model card of another project, an HF ``config.json``)
    is not ours and is ignored; a file that carries it but is damaged or incomplete is a UserError."""
    path = Path(checkpoint).with_suffix(".json")
    if not path.is_file() or path.stat().st_size > MAX_CARD_BYTES:
        return None
    text = path.read_text(errors="replace")
    if CARD_MARKER not in text:
        return None
    try:
        card = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is a damaged robustft card ({e}); re-export the model or delete the card") from None
    if not isinstance(card, dict):
        raise UserError(f"{path} is a damaged robustft card (a JSON {type(card).__name__}, not an object); re-export "
                        f"the model or delete the card")
    if CARD_MARKER not in card:
        return None
    recipe = card.get("recipe") if isinstance(card.get("recipe"), dict) else {}
    model = recipe.get("model", {})
    expected = {"arch": str, "num_classes": int, "method": str, "recipe": dict}
    problems = [k for k, tp in expected.items() if not isinstance(card.get(k), tp)]
    problems += [f"recipe.{k}" for k, v in (("method_args", recipe.get("method_args", {})), ("model", model))
                 if not isinstance(v, dict)]
    if isinstance(model, dict) and not isinstance(model.get("options", {}), dict):
        problems.append("recipe.model.options")
    data = card.get("data", {})  # older cards have none
    if not isinstance(data, dict):
        problems.append("data")
    else:
        size = data.get("image_size")
        if size is not None and not (isinstance(size, list) and len(size) == 2
                                     and all(isinstance(v, int) and v > 0 for v in size)):
            problems.append("data.image_size")
        storage = data.get("storage_size")
        if storage is not None and not (isinstance(storage, int) and storage >= max(size or [1])):
            problems.append("data.storage_size")
        if data.get("classes") is not None and not (isinstance(card.get("classes"), list)
                                                    and all(isinstance(c, str) for c in card["classes"])):
            problems.append("classes")
    if problems:
        raise UserError(f"{path} is an incomplete robustft card (missing or malformed: {', '.join(problems)}); "
                        f"re-export the model or delete the card")
    return card


def _rebuildable(card: dict[str, Any], checkpoint: str | Path) -> None:
    """Refuse the export of a run that fine-tuned a plain ``nn.Module``: only its own code builds that architecture."""
    if not card["arch"]:
        raise UserError(f"{checkpoint} was fine-tuned from a plain nn.Module, which robustft cannot rebuild: load it "
                        f"into that module (module.load_state_dict(torch.load(path, weights_only=True)))")


def card_options(card: dict[str, Any]) -> dict[str, Any]:
    """The architecture options of the run a card describes (``model.options``)."""
    return card["recipe"].get("model", {}).get("options", {})


def _card_normalization(card: dict[str, Any], checkpoint: str | Path) -> dict[str, torch.Tensor]:
    """The ``normalize.*`` buffers a card states (a plain export's weights carry none)."""
    stats = card.get("normalize")
    try:
        mean, std = resolve_normalization((stats["mean"], stats["std"]))
    except (UserError, TypeError, KeyError):
        raise UserError(f"{Path(checkpoint).with_suffix('.json')} is an incomplete robustft card (missing or "
                        f"malformed: normalize); re-export the model or delete the card") from None
    return {"normalize.mean": torch.tensor(mean).reshape(1, -1, 1, 1),
            "normalize.std": torch.tensor(std).reshape(1, -1, 1, 1)}


def card_inputs(card: dict[str, Any] | None) -> tuple[tuple[int, int] | None, list[str] | None]:
    """(height, width) an export was trained at and the classes its run selected (None: all), from a card that
    ``read_card`` checked: what ``evaluate`` of the export uses unless told otherwise. An older card states neither."""
    data = (card or {}).get("data", {})
    size = data.get("image_size")
    return (tuple(size) if size else None), (card["classes"] if data.get("classes") is not None else None)


def load_exported_model(arch: str, checkpoint: str | Path | None = None, *, num_classes: int | None = None,
                        normalization: NormSpec = None, **options: Any) -> nn.Module:
    """Load any checkpoint robustft reads (``models.load_checkpoint``; none: random init). A robustft export (its card
    beside it) is rebuilt with its run's architecture options (``options`` win) and its method's export structure
    (e.g. RoLI adapters), a plain export with its card's normalization."""
    card = read_card(checkpoint) if checkpoint else None
    if card is None:
        return load_checkpoint(arch, checkpoint, num_classes=num_classes, normalization=normalization, **options)
    recipe = card["recipe"]
    _rebuildable(card, checkpoint)
    if card["arch"] != arch:
        raise UserError(f"{checkpoint} was exported for --arch {card['arch']}, not {arch}")
    model = create_model(arch, num_classes or card["num_classes"], **{**card_options(card), **options})
    method = create_method(card["method"], **recipe.get("method_args", {}))
    state = from_timm_layout(read_state_dict(checkpoint, model), model)  # a plain export has timm 1.x names
    if "normalize.mean" not in state:  # a plain export (robustft export): its card states the statistics
        state.update(_card_normalization(card, checkpoint))
    return load_weights(method.export_architecture(model), state, str(checkpoint), normalization=normalization)


def export_plain(source: str | Path, out: str | Path) -> Path:
    """Write the exported model of a finished run (``RUN_DIR``, or its ``model.pt``) without its ``normalize.*``
    buffers, in timm 1.x names (``models.export``), so it loads strictly into the architecture's reference code
    (torchvision / timm), with a card beside it (the weights file with ``.json``) stating the normalization to apply
    outside. ``out`` without a suffix is a directory written as a timm / HF hub model directory: ``model.safetensors``
    and timm's ``config.json`` beside the card. Returns the weights file."""
    out = Path(out)
    if out.suffix not in (".safetensors", ".pt", ".pth", ""):
        raise UserError(f"--out {out}: name a .safetensors, .pt or .pth file, or a directory (no suffix) for a timm / "
                        f"Hugging Face hub model directory")
    weights_file = out / "model.safetensors" if not out.suffix else out
    checkpoint = resolve_weights(str(source))
    card = read_card(checkpoint)
    if card is None:
        raise UserError(f"{checkpoint} has no robustft card beside it ({checkpoint.with_suffix('.json').name}): "
                        f"export takes a finished run directory or its model.pt")
    _rebuildable(card, checkpoint)
    if weights_file.with_suffix(".json").resolve() == checkpoint.with_suffix(".json").resolve():
        raise UserError(f"--out {out} would overwrite the card of {checkpoint}; choose another name, e.g. "
                        f"{checkpoint.with_name('model_plain.safetensors')}")
    state = read_state_dict(checkpoint)
    if "normalize.mean" not in state:  # already a plain export: its card states the statistics
        state.update(_card_normalization(card, checkpoint))
    with torch.device("meta"):  # the architecture's own keys, without allocating its weights
        reference = create_model(card["arch"], card["num_classes"], **card_options(card))
    if differ := sorted(state.keys() ^ reference.state_dict().keys()):
        raise UserError(f"{checkpoint} does not have the plain {card['arch']} layout (key {differ[0]}; "
                        f"{len(differ)} differing in all): its method {card['method']} exports more structure than "
                        f"the architecture (e.g. RoLI adapters), which only robustft rebuilds; evaluate {checkpoint} "
                        f"with robustft")
    check_writable(weights_file)
    stated = card["normalize"] if isinstance(card.get("normalize"), dict) else {}
    normalize = {**stated, **{k: state.pop(f"normalize.{k}").flatten().tolist() for k in ("mean", "std")}}
    state = timm_state_dict(state, reference)
    fmt = ("safetensors" if weights_file.suffix == ".safetensors"
           else "torch.save (loads with torch.load(weights_only=True))")
    plain_card = {**card, "normalize": normalize, "exported_from": str(checkpoint),
                  "input": "float RGB in [0,1], NCHW, normalized outside the model: (x - normalize.mean) / "
                           "normalize.std per channel",
                  "format": f"{fmt} of the plain state_dict without normalize.* buffers, in timm 1.x names: loads "
                            f"strictly into the architecture's reference implementation",
                  "state_dict_keys": {k: list(v.shape) for k, v in state.items()}}
    write_state_dict(state, weights_file)
    atomic_write_json(plain_card, weights_file.with_suffix(".json"))
    if not out.suffix:
        size, _ = card_inputs(card)
        atomic_write_json(timm_config(reference, card["classes"], normalize["mean"], normalize["std"], size),
                          out / "config.json")
    return weights_file
