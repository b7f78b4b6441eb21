"""YAML <-> frozen dataclasses, with type checks, ``-o key=value`` overrides and saving.

YAML only sets values of the spec dataclasses: unknown keys, wrong types and failed range
checks are :class:`~bpnet.errors.SpecError` messages naming the file and dotted key.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from bpnet.errors import SpecError
from bpnet.io import parse_yaml, read_yaml, write_text_atomic

T = TypeVar("T")

# TAO spec files carry `__class_name__` markers; accept them so a TAO spec reads unchanged.
_IGNORED_KEYS = {"__class_name__"}


class SpecValueError(ValueError):
    """Raised by a spec dataclass's ``__post_init__``: ``field`` is relative to that class."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
        self.message = message


def load_spec(cls: type[T], path: str | Path | None, overrides: list[str] | tuple = ()) -> T:
    """Read a YAML spec into ``cls`` (all defaults when ``path`` is None), then apply overrides.

    Args:
        cls: a (frozen) dataclass type, e.g. ``ExperimentSpec``.
        path: YAML file; missing keys keep their defaults.
        overrides: ``"dotted.key=value"`` strings; the value is parsed as YAML.

    Example:
        >>> spec = load_spec(ExperimentSpec, "specs/synthetic_demo.yaml",  # doctest: +SKIP
        ...                  ["dataloader.batch_size=4"])
    """
    source = str(path) if path is not None else "<defaults>"
    raw: Any = {}
    if path is not None:
        raw = read_yaml(path)
        raw = {} if raw is None else raw
        if not isinstance(raw, dict):
            raise SpecError(f"{path}: expected a mapping of spec keys at the top level")
    for item in overrides:
        _apply_override(cls, raw, item)
    try:
        return from_dict(cls, raw, source)
    except SpecError as err:
        # a bad value that came from -o is the override's fault, not the file's
        key = getattr(err, "key", None)
        for item in reversed(overrides):
            override_key = item.split("=", 1)[0].strip()
            if key is not None and re.match(rf"{re.escape(override_key)}(\.|\[|$)", key):
                raise SpecError(f"override {item!r}: {key}: {err.detail}") from None
        raise


def _key_error(source: str, key: str, detail: str) -> SpecError:
    """A SpecError about one dotted key, which remembers the key (to blame an override)."""
    err = SpecError(f"{source}: {key}: {detail}")
    err.key, err.detail = key, detail
    return err


def from_dict(cls: type[T], raw: dict, source: str = "<spec>", prefix: str = "") -> T:
    """Convert a nested mapping into dataclass ``cls``, checking keys and types."""
    if not isinstance(raw, dict):
        raise _key_error(
            source, prefix.rstrip(".") or "<top>", f"expected a mapping, got {_show(raw)}"
        )
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in raw.items():
        dotted = f"{prefix}{key}"
        if key in _IGNORED_KEYS:
            continue
        if key not in fields:
            raise SpecError(
                f"{source}: unknown key '{dotted}'; known keys here: {', '.join(sorted(fields))}"
            )
        kwargs[key] = _convert(hints[key], value, source, dotted)
    try:
        return cls(**kwargs)
    except SpecValueError as err:
        raise _key_error(source, f"{prefix}{err.field}", err.message) from None


def to_dict(spec: Any) -> Any:
    """A dataclass (tree) as plain YAML-able data."""
    if dataclasses.is_dataclass(spec):
        return {f.name: to_dict(getattr(spec, f.name)) for f in dataclasses.fields(spec)}
    if isinstance(spec, (list, tuple)):
        return [to_dict(v) for v in spec]
    return spec


def dump_spec(spec: Any) -> str:
    return yaml.safe_dump(to_dict(spec), sort_keys=False, default_flow_style=False)


def save_spec(spec: Any, path: str | Path) -> None:
    """Write the resolved spec (every field, defaults included) atomically as YAML."""
    write_text_atomic(path, dump_spec(spec))


def _apply_override(cls: type, raw: dict, item: str) -> None:
    if "=" not in item:
        raise SpecError(f"override {item!r}: expected key.sub=value")
    dotted, text = item.split("=", 1)
    keys = dotted.strip().split(".")
    # walk the dataclass types too, so a typo fails here with the list of valid keys
    node, node_cls = raw, cls
    for depth, key in enumerate(keys):
        fields = {f.name: f for f in dataclasses.fields(node_cls)}
        if key not in fields:
            where = ".".join(keys[:depth]) or "<top>"
            raise SpecError(
                f"override {item!r}: unknown key '{'.'.join(keys[: depth + 1])}'; "
                f"known keys under {where}: {', '.join(sorted(fields))}"
            )
        if depth == len(keys) - 1:
            node[key] = parse_yaml(text, f"override {item!r}")
            return
        sub_cls = _dataclass_in(get_type_hints(node_cls)[key])
        if sub_cls is None:
            raise SpecError(f"override {item!r}: '{'.'.join(keys[: depth + 1])}' has no sub-keys")
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node, node_cls = node[key], sub_cls


def _dataclass_in(tp: Any) -> type | None:
    if dataclasses.is_dataclass(tp):
        return tp
    for arg in get_args(tp):
        if dataclasses.is_dataclass(arg):
            return arg
    return None


def _convert(tp: Any, value: Any, source: str, dotted: str) -> Any:
    origin = get_origin(tp)

    def fail(expected: str) -> SpecError:
        return _key_error(source, dotted, f"expected {expected}, got {_show(value)}")

    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise fail(_type_name(tp))
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, source, dotted)
            except SpecError as err:
                errors.append(err)
        if len(errors) == 1:
            raise errors[0]
        raise fail(_type_name(tp))
    if origin is Literal:
        if value not in get_args(tp):
            raise fail("one of " + ", ".join(repr(a) for a in get_args(tp)))
        return value
    if dataclasses.is_dataclass(tp):
        if value is None:
            return tp()
        return from_dict(tp, value, source, dotted + ".")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise fail(_type_name(tp))
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise fail(f"a list of {len(args)} values")
            return tuple(
                _convert(a, v, source, f"{dotted}[{i}]")
                for i, (a, v) in enumerate(zip(args, value, strict=True))
            )
        item = args[0] if args else Any
        items = [_convert(item, v, source, f"{dotted}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if tp is bool:
        if not isinstance(value, bool):
            raise fail("true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail("an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail("a number")
        if not math.isfinite(value):
            raise fail("a finite number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise fail("a string")
        return value
    raise TypeError(f"spec field {dotted} has unsupported type {tp!r}")


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return {
            "int": "an integer",
            "float": "a number",
            "str": "a string",
            "bool": "true or false",
        }.get(tp.__name__, tp.__name__)
    return str(tp).replace("typing.", "")


def _show(value: Any) -> str:
    text = " ".join(repr(value).split())  # one line, whatever the value (a tensor's repr is not)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


__all__ = ["SpecValueError", "dump_spec", "from_dict", "load_spec", "save_spec", "to_dict"]
