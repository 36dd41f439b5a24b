"""Typed configs: dataclasses built from plain mappings (YAML, overrides, method options), checked as they are built.

Every field may declare its valid range in its metadata next to its help text — ``ge``/``gt`` (lower bound,
inclusive/exclusive) and ``le``/``lt`` (upper bound) — so each numeric key is checked in one place, for run configs
and method configs alike.
"""

import dataclasses
import types
import typing
from typing import Any

from .errors import UserError

__all__ = ["from_dict", "check_bounds"]

_BOUNDS = {"ge": (lambda v, b: v >= b, ">="), "gt": (lambda v, b: v > b, ">"),
           "le": (lambda v, b: v <= b, "<="), "lt": (lambda v, b: v < b, "<")}


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check/convert one value against a type annotation (the few kinds configs use)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(tp):
            return None
        errors = []
        for arg in typing.get_args(tp):
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except UserError as e:
                errors.append(str(e))
        raise UserError(errors[0])
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise UserError(f"config key {where!r} must be a mapping, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise UserError(f"config key {where!r} must be a list, got {value!r}")
        args = typing.get_args(tp)
        if origin is tuple and len(value) != len(args):
            raise UserError(f"config key {where!r} must hold {len(args)} values, got {value!r}")
        items = [_coerce(v, args[0] if origin is list else args[i], f"{where}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise UserError(f"config key {where!r} must be a mapping, got {value!r}")
        args = typing.get_args(tp)
        return {k: _coerce(v, args[1], f"{where}.{k}") for k, v in value.items()} if args else dict(value)
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if tp is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise UserError(f"config key {where!r} must be {tp.__name__}, got {value!r}")
    return value


def check_bounds(value: Any, metadata: typing.Mapping[str, Any], where: str) -> None:
    """Raise a UserError when a number (or any number in a list) lies outside the field's declared range."""
    items = value if isinstance(value, (list, tuple)) else [value]
    for item in items:
        if not isinstance(item, (int, float)) or isinstance(item, bool):
            continue
        for key, (ok, _) in _BOUNDS.items():
            if key in metadata and not ok(item, metadata[key]):
                limits = " and ".join(f"{o} {metadata[k]}" for k, (_, o) in _BOUNDS.items() if k in metadata)
                about = f" ({metadata['help']})" if metadata.get("help") else ""
                raise UserError(f"config key {where!r} must be {limits}{about}, got {item!r}")


def from_dict(cls: type, data: dict[str, Any], where: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping: unknown keys are refused with the valid ones listed, values are
    type-checked and range-checked, then ``cls.__post_init__`` checks what involves several keys."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        prefix = f"{where}." if where else ""
        raise UserError(f"unknown config key(s) {', '.join(prefix + k for k in unknown)}; "
                        f"valid under {where or 'the top level'}: {', '.join(fields)}")
    kwargs = {}
    for key, value in data.items():
        name = f"{where}.{key}" if where else key
        kwargs[key] = _coerce(value, hints[key], name)
        if kwargs[key] is not None:
            check_bounds(kwargs[key], fields[key].metadata, name)
    return cls(**kwargs)
