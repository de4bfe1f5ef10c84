"""Strict loading of typed params: YAML 1.2 reading, dataclass checking with key-path messages.

The schema (the dataclasses of every section) lives in :mod:`pipeline.params`; this module is the generic part:
a mapping is checked against a (nested, frozen) dataclass, unknown keys and wrong types raise
:class:`ParamsError` naming the key's full path (``data.world.clases``).
"""
from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

T = TypeVar("T")


class ParamsError(ValueError):
    """A params file or section that does not fit its schema; the message names the key."""


def check(value: Any, tp: Any, where: str) -> Any:
    """Convert/validate one value against a type annotation; return the converted value."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where=where)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ParamsError(f"{where}: {value!r} is not one of {list(typing.get_args(tp))}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return check(value, arg, where)
            except ParamsError as exc:
                errors.append(str(exc))
        raise ParamsError(errors[0] if errors else f"{where}: bad value {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ParamsError(f"{where}: expected a list, got {value!r}")
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        return origin(check(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value))
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is Any or (isinstance(tp, type) and isinstance(value, tp) and not (tp is int and isinstance(value, bool))):
        return value
    raise ParamsError(f"{where}: expected {getattr(tp, '__name__', tp)}, got {value!r}")


def from_dict(cls: type[T], data: Any, *, where: str) -> T:
    """Build dataclass ``cls`` from a plain mapping; unknown keys and wrong types raise ParamsError."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ParamsError(f"{where}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ParamsError(f"unknown key '{where}.{unknown[0]}' (known: {', '.join(sorted(names))})")
    kwargs = {k: check(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs)


class _Yaml12Loader(yaml.SafeLoader):
    """Safe YAML with YAML 1.2 booleans and floats, as DVC's own reader (ruamel) sees the file: keys and values
    such as ``on``, ``off``, ``yes``, ``no`` stay strings (1.1 reads booleans), and ``1e-8`` is a float (1.1
    wants a dot: ``1.0e-8``; DVC writes ``-S x=1e-8`` back as ``1e-08``)."""


_YAML12 = {
    "tag:yaml.org,2002:bool": (re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), "tTfF"),
    "tag:yaml.org,2002:float": (re.compile(r"""^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$""", re.X), "-+.0123456789"),
}
_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in _YAML12]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
for _tag, (_rx, _firsts) in _YAML12.items():
    _Yaml12Loader.add_implicit_resolver(_tag, _rx, list(_firsts))


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a params file as a mapping; a missing or malformed file raises ParamsError."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"params file not found: {path}")
    try:
        data = yaml.load(path.read_text(), Loader=_Yaml12Loader) or {}
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: top level must be a mapping")
    return data


def section(path: str | Path, name: str, cls: type[T]) -> T:
    """Load one top-level section ``name`` of ``path`` as dataclass ``cls`` (strict)."""
    return from_dict(cls, read_yaml(path).get(name), where=name)


def scalar(path: str | Path, name: str, tp: type[T], default: T) -> T:
    """Load one top-level scalar (``seed``, ``loss``, ``selection``) with a type check."""
    data = read_yaml(path)
    return check(data.get(name, default), tp, name)
