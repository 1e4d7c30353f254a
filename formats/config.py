"""Typed configuration loading: a JSON/TOML dict checked against a dataclass, at every depth.

One loader for the pseudo, filter, phrase, training and self-training configs. A config is a dataclass;
`from_dict` builds it from the dict a JSON or TOML file gives, refusing unknown keys (with the closest known
key as a hint), missing required keys and values of the wrong type, each with the key's full path
(``pseudo.filter.fused_treshold``, ``eval[1].protocol``) and the file::

    run.toml: pseudo.filter.fused_treshold: unknown key (did you mean fused_threshold?)
    run.toml: train.steps: expected int, got str ('100')

Values are never converted (an int stays an int where a float is expected), so a checked dict is stored and
fingerprinted exactly as given. Nested settings are either dataclass-typed fields (built recursively) or
``dict`` / ``list[dict]`` fields whose ``metadata={"config": Schema}`` names the dataclass each dict must fit
(a class, or ``"module:Class"`` imported on first use); those stay plain dicts, as manifests record them.
Standard library only; no torch.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import json
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

SCHEMA = "config"  # the field-metadata key naming the dataclass a dict field (or each dict of a list) must fit


class ConfigError(ValueError):
    """A config value that does not fit its dataclass; ``str(e)`` is ``"FILE: KEY.PATH: reason"``.

    Attributes: `key` (the full key path, "" for the whole config), `reason`, `file` (None when the dict
    came from no file)."""

    def __init__(self, key: str, reason: str, file: str | os.PathLike | None = None):
        self.key, self.reason, self.file = key, reason, None if file is None else str(file)
        if self.file and "://" in self.file:  # a config on an object store: never show credentials in its URL
            from formats.storage import redact

            self.file = redact(self.file)
        super().__init__(": ".join(p for p in (self.file, key, reason) if p))


def read_config_file(path: str | os.PathLike) -> dict:
    """The dict of a TOML (``.toml``) or JSON file: a local path, or an object-store URL (``s3://...``, read
    through `formats.storage` with the environment's credentials, so a cluster job needs no local file).

    Raises OSError when it cannot be read, ConfigError when it does not parse or is not a table/object."""
    p, text = _read_text(path)
    try:
        data = tomllib.loads(text) if p.endswith(".toml") else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError("", f"not a valid config: {e}", p) from None
    if not isinstance(data, dict):
        raise ConfigError("", f"not a valid config: expected an object, got {_kind(data)}", p)
    return data


def _read_text(path: str | os.PathLike) -> tuple[str, str]:
    """(the file's name as errors show it, its text)."""
    if isinstance(path, str) and "://" in path:
        from formats import storage  # fsspec only for URLs: local configs stay standard library only

        if storage.is_url(path) and not storage.Folder(path).is_local:
            folder, name = storage.split_location(path)
            try:
                raw = folder.read_bytes(name)
            except FileNotFoundError:
                raise FileNotFoundError(f"{folder.url_of(name)}: no such file") from None
            return folder.url_of(name), raw.decode()
        path = storage.Folder(path).path
    try:
        return str(path), Path(path).read_text()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None


def load_config(cls: type[T], path: str | os.PathLike) -> T:
    """`cls` built from the file at `path` (see `read_config_file`, `from_dict`)."""
    return from_dict(cls, read_config_file(path), file=path)


def from_dict(cls: type[T], data: Mapping, *, file: str | os.PathLike | None = None, path: str = "") -> T:
    """An instance of the dataclass `cls` from `data`, nested dataclasses built, every key and value checked.

    `path` prefixes the key paths of errors (the place of `data` in a larger config); `file` names the source.
    Raises ConfigError for an unknown or missing key, a value of the wrong type, or a ValueError of the
    dataclass's own checks (``__post_init__``)."""
    if not isinstance(data, Mapping):
        raise ConfigError(path, f"expected a table of {cls.__name__} settings, got {_kind(data)}", file)
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f"did you mean {close[0]}?" if close else f"known: {', '.join(fields)}"
            raise ConfigError(_join(path, key), f"unknown key ({hint})", file)
    kwargs = {}
    for name, f in fields.items():
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(_join(path, name), "required key missing", file)
            continue
        where = _join(path, name)
        value = _check(data[name], hints[name], where, file)
        schema = f.metadata.get(SCHEMA)
        if schema is not None:
            schema = _resolve(schema)
            for i, item in enumerate(value) if isinstance(value, list) else [(None, value)]:
                from_dict(schema, item, file=file, path=where if i is None else f"{where}[{i}]")
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(path, str(e), file) from None


def _check(value: Any, tp: Any, where: str, file) -> Any:
    """`value` if it is of type `tp` (a dataclass type: the instance built from it); else ConfigError."""
    if tp is Any or tp is object:
        return value
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        for arm in args:
            try:
                return _check(value, arm, where, file)
            except ConfigError as e:
                if dataclasses.is_dataclass(arm) and isinstance(value, Mapping):
                    raise e  # the value is meant as that table: its own error is the useful one
        raise ConfigError(where, f"expected {_name(tp)}, got {_kind(value)}", file)
    if origin is typing.Literal:
        if value in args and all(type(value) is type(a) for a in args if a == value):
            return value
        raise ConfigError(where, f"expected one of {', '.join(map(repr, args))}, got {value!r}", file)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, file=file, path=where)
    if origin in (list, tuple, set, frozenset) or tp in (list, tuple, set, frozenset):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(where, f"expected {_name(tp)}, got {_kind(value)}", file)
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                raise ConfigError(where, f"expected {len(args)} items, got {len(value)}", file)
            items = [_check(v, a, f"{where}[{i}]", file) for i, (v, a) in enumerate(zip(value, args))]
        elif args:
            items = [_check(v, args[0], f"{where}[{i}]", file) for i, v in enumerate(value)]
        else:
            items = value
        # the value itself unless an item was built (a dataclass), so checked lists stay the caller's objects
        return value if all(a is b for a, b in zip(items, value)) else type(value)(items)
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(where, f"expected a table, got {_kind(value)}", file)
        if not args:
            return value
        for k in value:
            _check(k, args[0], _join(where, k), file)
        built = {k: _check(v, args[1], _join(where, k), file) for k, v in value.items()}
        return value if all(built[k] is v for k, v in value.items()) else built
    if tp is None or tp is type(None):
        ok = value is None
    elif tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(tp, type):
        ok = isinstance(value, tp)
    else:  # a typing construct this loader does not know: not checked
        ok = True
    if not ok:
        raise ConfigError(where, f"expected {_name(tp)}, got {_kind(value)}", file)
    return value


def _hints(cls: type) -> dict[str, Any]:
    """The field types of `cls` (string annotations resolved in its module)."""
    return typing.get_type_hints(cls)


def _resolve(schema: type | str) -> type:
    """A schema given as a class, or as ``"module:Class"`` (imported now)."""
    if isinstance(schema, str):
        module, _, name = schema.partition(":")
        return getattr(importlib.import_module(module), name)
    return schema


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _name(tp: Any) -> str:
    """A type as a config author reads it: ``float``, ``int | None``, ``list[str]``."""
    if tp is None or tp is type(None):
        return "None"
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " | ".join(_name(a) for a in typing.get_args(tp))
    origin = typing.get_origin(tp)
    if origin is not None and isinstance(origin, type):
        return f"{origin.__name__}[{', '.join('...' if a is Ellipsis else _name(a) for a in typing.get_args(tp))}]"
    return tp.__name__ if isinstance(tp, type) else str(tp).replace("typing.", "")


def _kind(value: Any) -> str:
    """What a value is, for messages: ``str ('0.3')``, ``list``, ``None``."""
    if value is None:
        return "None"
    if isinstance(value, (str, int, float)):
        return f"{type(value).__name__} ({value!r})"
    return type(value).__name__
