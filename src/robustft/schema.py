"""Typed configs: dataclasses built from plain mappings (YAML, overrides, method options), checked as they are built.

Every field may declare its valid range in its metadata next to its help text — ``ge``/``gt`` (lower bound,
inclusive/exclusive) and ``le``/``lt`` (upper bound) — so each numeric key is checked in one place, for run configs
and method configs alike. A key with a fixed set of choices is typed ``Literal[...]`` and checked here too.
A float key takes a number or a fraction (``8/255``), stored as the number. ``describe`` reads the same annotations
and metadata back (type, default, range, help) for ``robustft config`` and the docs' key tables.
"""

import dataclasses
import math
import types
import typing
from fractions import Fraction
from typing import Any

from .errors import UserError, shown

__all__ = ["from_dict", "coerce_value", "check_bounds", "describe", "KeyInfo", "type_name", "format_value",
           "format_keys", "parse_number"]

_BOUNDS = {"ge": (lambda v, b: v >= b, ">="), "gt": (lambda v, b: v > b, ">"),
           "le": (lambda v, b: v <= b, "<="), "lt": (lambda v, b: v < b, "<")}
# YAML 1.1 (PyYAML) reads off/on/no/yes as booleans: `--set train.amp=off` must still mean the choice "off"
_YAML_BOOLS = {False: ("off", "no", "false"), True: ("on", "yes", "true")}


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
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        if isinstance(value, bool):
            value = next((c for c in _YAML_BOOLS[value] if c in choices), value)
        if not any(value == c and type(value) is type(c) for c in choices):
            raise UserError(f"config key {where!r} must be one of {', '.join(map(str, choices))}, got {shown(value)}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise UserError(f"config key {where!r} must be a mapping, got {shown(value)}")
        return from_dict(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise UserError(f"config key {where!r} must be a list, got {shown(value)}")
        args = typing.get_args(tp)
        if origin is tuple and len(value) != len(args):
            raise UserError(f"config key {where!r} must hold {len(args)} values, got {shown(value)}")
        items = [_coerce(v, args[0] if origin is list else args[i], f"{where}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise UserError(f"config key {where!r} must be a mapping, got {shown(value)}")
        args = typing.get_args(tp)
        return {k: _coerce(v, args[1], f"{where}.{k}") for k, v in value.items()} if args else dict(value)
    if tp is Any:
        return value
    if tp is float and not isinstance(value, bool) and isinstance(value, (int, float, str)):
        return _finite(value, where)
    if tp is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise UserError(f"config key {where!r} must be {tp.__name__}, got {shown(value)}")
    return value


def parse_number(text: str) -> float:
    """A number written as a decimal (``0.031``, ``1e-4``) or as a fraction (``8/255``); ValueError when neither."""
    try:
        return float(text)
    except ValueError:
        try:
            return float(Fraction(text.strip()))
        except ZeroDivisionError:
            raise ValueError(f"{text!r} divides by zero") from None


def _finite(value: int | float | str, where: str) -> float:
    """A float key's value as a finite float: a number, or a string of one or of a fraction (``8/255``; YAML 1.1
    reads 1e-4, without a dot, as a string too)."""
    try:
        number = parse_number(value) if isinstance(value, str) else float(value)
    except (ValueError, OverflowError):
        raise UserError(f"config key {where!r} must be float, got {shown(value)} (a number, or a fraction such as "
                        f"8/255)") from None
    if not math.isfinite(number):
        raise UserError(f"config key {where!r} must be a finite number, got {shown(value)}")
    return number


def coerce_value(value: Any, tp: Any, where: str) -> Any:
    """One value checked against a type annotation and converted (an int for a float), as ``from_dict`` does."""
    return _coerce(value, tp, where)


def _limits(metadata: typing.Mapping[str, Any]) -> str:
    """The declared range in words, e.g. ``> 0 and < 1`` (empty when the field declares none)."""
    return " and ".join(f"{o} {metadata[k]}" for k, (_, o) in _BOUNDS.items() if k in metadata)


def check_bounds(value: Any, metadata: typing.Mapping[str, Any], where: str) -> None:
    """Raise a UserError when a number (or any number in a list) lies outside the field's declared range."""
    items = value if isinstance(value, (list, tuple)) else [value]
    for item in items:
        if not isinstance(item, (int, float)) or isinstance(item, bool):
            continue
        for key, (ok, _) in _BOUNDS.items():
            if key in metadata and not ok(item, metadata[key]):
                about = f" ({metadata['help']})" if metadata.get("help") else ""
                raise UserError(f"config key {where!r} must be {_limits(metadata)}{about}, got {shown(item)}")


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


# ---------------------------------------------------------------------------------------------------------------
# Describing a config: what `robustft config` prints and the docs' key tables show
# ---------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class KeyInfo:
    """One config key: dotted path, readable type, default (``dataclasses.MISSING`` if required), range and help."""

    key: str
    type: str
    default: Any
    range: str
    help: str

    @property
    def section(self) -> str:
        """The part of the key before its last dot (``top`` for a top-level key)."""
        return self.key.rpartition(".")[0] or "top"


def type_name(tp: Any) -> str:
    """A type annotation as a user reads it: ``int``, ``float | None``, ``one of sgd, adamw``, ``list[str]``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " | ".join("None" if a is type(None) else type_name(a) for a in args)
    if origin is typing.Literal:
        return f"one of {', '.join(map(str, args))}"
    if origin is list:
        return f"list[{type_name(args[0])}]"
    if origin is tuple:  # written as a YAML list of that length
        return f"[{', '.join(type_name(a) for a in args)}]"
    if origin is dict or tp is dict:
        return "mapping"
    if tp is Any:
        return "any"
    return tp.__name__


def _default(f: dataclasses.Field) -> Any:
    """A field's default value (``MISSING`` when the key is required)."""
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def describe(config: Any, where: str = "") -> list[KeyInfo]:
    """Every key of a config dataclass (or of an instance, whose values are then the defaults), nested dataclasses
    recursed into dotted keys."""
    cls = config if isinstance(config, type) else type(config)
    hints = typing.get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        key = f"{where}.{f.name}" if where else f.name
        value = _default(f) if isinstance(config, type) else getattr(config, f.name)
        if dataclasses.is_dataclass(hints[f.name]):
            rows += describe(hints[f.name] if value is dataclasses.MISSING else value, key)
        else:
            rows.append(KeyInfo(key, type_name(hints[f.name]), value, _limits(f.metadata), f.metadata.get("help", "")))
    return rows


def _number(value: float) -> str:
    """A float as written: its shortest decimal, or the fraction it is exactly when that decimal is long (8/255)."""
    text = repr(value)
    if len(text) > 10 and math.isfinite(value):
        fraction = Fraction(value).limit_denominator(1000)
        if float(fraction) == value:
            return f"{fraction.numerator}/{fraction.denominator}"
    return text


def format_value(value: Any) -> str:
    """A value as it is written in YAML or ``--set``: ``null``, ``true``, ``[0.5, 0.75]``, ``8/255``, ``''``."""
    if value is dataclasses.MISSING:
        return "required"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return f"[{', '.join(format_value(v) for v in value)}]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {format_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, str):
        return value or "''"
    return _number(value) if isinstance(value, float) else repr(value)


def _columns(row: KeyInfo) -> tuple[str, str, str, str]:
    """Key, type, default and help with its range: the columns of one printed row."""
    return row.key, row.type, format_value(row.default), row.help + (f" ({row.range})" if row.range else "")


def format_keys(rows: list[KeyInfo], markdown: bool = False) -> str:
    """Rows grouped by section, as aligned text columns or as one markdown table per section."""
    sections: dict[str, list[KeyInfo]] = {}
    for row in rows:
        sections.setdefault(row.section, []).append(row)
    if markdown:
        def cells(row: KeyInfo) -> str:
            key, tp, default, about = (c.replace("|", "\\|") for c in _columns(row))
            return f"| `{key}` | {tp} | `{default}` | {about} |\n"

        return "\n".join(f"**`{name}`**\n\n| key | type | default | help |\n|---|---|---|---|\n"
                         + "".join(map(cells, group)) for name, group in sections.items())
    lines = []
    for name, group in sections.items():
        columns = [_columns(row) for row in group]
        widths = [max(len(c[i]) for c in columns) for i in range(3)]
        lines.append(f"[{name}]")
        lines += [("  " + "".join(c.ljust(w + 2) for c, w in zip(fixed, widths, strict=True)) + about).rstrip()
                  for *fixed, about in columns]
    return "\n".join(lines) + "\n"
