"""Strict construction of frozen dataclasses from plain mappings.

Every stage of the pipeline has one frozen dataclass for its configuration
(``pipelines/config.py``). This module turns a mapping (a section of
``params.yaml``) into such a dataclass and refuses anything surprising: an
unknown key, a missing key or a value of the wrong type is a
:class:`ConfigError` naming the dotted key and the file it came from, in the
manner of nanoGPT's configurator (``ValueError(f"Unknown config key: {key}")``).

The project's one config style: every field required (values live in
``params.yaml``, stated once); a name chosen from a registry is a
``Literal``, which :func:`build` checks and which a class's ``__post_init__``
checks on direct construction with :func:`check_choices`; ranges and rules
between fields are checked in ``__post_init__``, raising :class:`ConfigError`
with the key.

Supported field types: ``bool``, ``int``, ``float`` (an int is accepted),
``str``, ``Literal[...]``, ``Optional[T]`` / ``T | None``, ``tuple[T, ...]``,
``dict[str, T]`` and nested dataclasses.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is missing, unknown or of the wrong type."""


def _type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, key: str, source: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return the typed value."""

    def fail(expected: str) -> ConfigError:
        return ConfigError(
            f"{source}: key '{key}' must be {expected}, got {value!r} ({type(value).__name__})"
        )

    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise fail(f"a mapping of {tp.__name__} fields")
        return build(tp, value, source=source, prefix=key)
    if origin is Literal:
        if value not in get_args(tp):
            raise fail(f"one of {_type_name(tp)}")
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise fail(_type_name(tp))
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key, source)
            except ConfigError:
                continue
        raise fail(" or ".join(_type_name(a) for a in args))
    if origin is tuple:
        args = get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise fail("a list")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{key}[{i}]", source) for i, v in enumerate(value))
        if len(args) != len(value):
            raise fail(f"a list of {len(args)} items")
        return tuple(_convert(v, a, f"{key}[{i}]", source) for i, (v, a) in enumerate(zip(value, args)))
    if origin is dict:
        key_tp, val_tp = get_args(tp)
        if not isinstance(value, Mapping):
            raise fail("a mapping")
        return {
            _convert(k, key_tp, f"{key}.{k}", source): _convert(v, val_tp, f"{key}.{k}", source)
            for k, v in value.items()
        }
    if tp is Any:
        return value
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
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise fail("a string")
        return value
    raise ConfigError(f"{source}: key '{key}' has an unsupported type {tp!r}")


def build(cls: type[T], data: Mapping[str, Any], *, source: str = "<config>", prefix: str = "") -> T:
    """Build the frozen dataclass ``cls`` from ``data``, strictly.

    Args:
        cls: A dataclass type; fields without a default are required.
        data: The mapping to read, e.g. one section of ``params.yaml``.
        source: Where ``data`` came from (a file path), used in error messages.
        prefix: Dotted key of ``data`` inside the file, used in error messages.

    Returns:
        An instance of ``cls``.

    Raises:
        ConfigError: On an unknown key, a missing key or a wrong type; the
            message names the dotted key and ``source``.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: key '{prefix or '<root>'}' must be a mapping, got {data!r}")
    dotted = (prefix + ".") if prefix else ""
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{source}: unknown key '{dotted}{unknown[0]}' (known keys: {', '.join(sorted(fields))})"
        )
    kwargs = {}
    for name, field in fields.items():
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], dotted + name, source)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{source}: missing key '{dotted}{name}'")
    return cls(**kwargs)


def check_choices(obj: Any) -> None:
    """Refuse a ``Literal``-typed field of the dataclass ``obj`` that holds none of its names.

    Call from ``__post_init__``, so that a config built in code is held to the
    names :func:`build` holds a file to.

    Raises:
        ConfigError: ``<Class>.<field> must be one of ..., got ...``.
    """
    for name, tp in get_type_hints(type(obj)).items():
        if get_origin(tp) is Literal and getattr(obj, name) not in get_args(tp):
            raise ConfigError(f"{type(obj).__name__}.{name} must be one of {_type_name(tp)}, "
                              f"got {getattr(obj, name)!r}")


def to_dict(obj: Any) -> dict[str, Any]:
    """A dataclass as plain nested dicts and lists (tuples become lists), for YAML/JSON."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(obj)


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings into dotted keys: ``{"a": {"b": 1}} -> {"a.b": 1}``."""
    out: dict[str, Any] = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any], *, source: str = "<override>",
               prefix: str = "") -> dict[str, Any]:
    """Merge ``override`` into ``base``; a key absent from ``base`` is a ConfigError.

    Used for profiles: an override may only change keys that exist.
    """
    out = dict(base)
    for k, v in override.items():
        key = f"{prefix}{k}"
        if k not in base:
            raise ConfigError(f"{source}: unknown key '{key}'")
        if isinstance(v, Mapping) and isinstance(base[k], Mapping):
            out[k] = deep_merge(base[k], v, source=source, prefix=key + ".")
        else:
            out[k] = v
    return out


__all__ = ["ConfigError", "build", "to_dict", "flatten", "deep_merge"]
