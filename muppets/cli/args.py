"""Typed config dataclasses <-> command-line flags and TOML files.

A command's options are the fields of one dataclass, and the fields of the option groups it holds
(training/options.py: `optimization`, `logging`, ...), all by flat names: `--learning-rate`,
`learning_rate = 1e-3` (a TOML `[optimization]` table is read too), `--set learning_rate=1e-3`.
Values resolve in this order, later
wins: dataclass defaults < `--config file.toml` < `--set key=value` < explicit flags. Unknown keys
are an error that names the key and the file. A field that is a list of dataclasses (pretrain's
`phases`) is read from TOML only, as an array of tables (`[[phases]]`), each key checked against
the dataclass and named `phases[k].key` (k from 1). A `listable` option (training/options.py)
takes a number, a TOML list of numbers or "5e-5,1e-4" text, which its group checks. The resolved
config, defaults included, is written beside the command's outputs so that every run can be
reproduced.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tomllib
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from muppets.errors import ConfigError, InputError
from muppets.training.options import flat_fields, flat_options, from_options, group_fields

_SCALARS = (bool, int, float, str)


def _field_type(cls: type, field: dataclasses.Field) -> tuple[type, bool, bool]:
    """(scalar type, optional, is_list) of a field annotated with a scalar, list or `X | None`."""
    hint = typing.get_type_hints(cls)[field.name]
    optional = False
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional, hint = True, args[0]
        origin = typing.get_origin(hint)
    if origin in (list, tuple):
        return typing.get_args(hint)[0], optional, True  # scalars, or dataclasses: tables
    if hint is Path:
        hint = str
    if hint not in _SCALARS:
        raise TypeError(f"{cls.__name__}.{field.name}: unsupported config type {hint}")
    return hint, optional, False


def _coerce(value: Any, kind: type, is_list: bool, key: str, where: str) -> Any:
    """Check a TOML or parsed value against the field type; ints are accepted as floats."""
    if is_list:
        if isinstance(value, str):  # "a,b,c" from --set
            value = [v for v in value.split(",") if v]
        if not isinstance(value, list):
            raise ConfigError(f"{key} must be a list, got {value!r}", path=where)
        return [_coerce(v, kind, False, key, where) for v in value]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{key} must be {kind.__name__}, got {value!r}", path=where)
    return value


def _listable(value: Any, key: str, where: str | None = None) -> Any:
    """A listable option's value as given (its group parses and checks it): a number, a list of
    numbers, or comma-separated text."""
    numbers = value if isinstance(value, list) else [value]
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in numbers) and numbers:
        return value
    if isinstance(value, str):
        return value
    raise ConfigError(f"{key} must be a number or a list of numbers, got {value!r}", path=where)


def _parse_text(text: str, kind: type, key: str) -> Any:
    """A `--set key=value` string to a value of the field's scalar type."""
    if kind is str:
        return text
    if kind is bool:
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
    else:
        try:
            return kind(text)
        except ValueError:
            pass
    raise ConfigError(f"--set {key}={text}: not a valid {kind.__name__}")


def add_config_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    """One flag per field (`vocab_size` -> `--vocab-size`), plus --config and --set."""
    parser.add_argument("--config", metavar="TOML", help="read options from a TOML file")
    parser.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="override one option (repeatable)",
    )
    for _, owner, field, default in flat_fields(cls).values():
        kind, _, is_list = _field_type(owner, field)
        if dataclasses.is_dataclass(kind):
            continue  # tables ([[phases]]) come from TOML files only
        if field.metadata.get("listable"):
            kind = str  # "5e-5,1e-4": the group parses the list
        flag = "--" + field.name.replace("_", "-")
        help_text = field.metadata.get("help", "")
        help_text = f"{help_text} (default: {default})" if help_text else f"default: {default}"
        if field.metadata.get("positional"):  # e.g. the text of `predict fill-mask "..."`
            parser.add_argument(
                field.name,
                type=kind,
                nargs="*" if is_list else "?",
                default=argparse.SUPPRESS,
                help=help_text,
            )
        elif kind is bool and not is_list:
            parser.add_argument(
                flag,
                dest=field.name,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=help_text,
            )
        else:
            parser.add_argument(
                flag,
                dest=field.name,
                type=kind,
                nargs="+" if is_list else None,
                default=argparse.SUPPRESS,
                help=help_text,
            )


def load_toml(path: str | Path) -> dict[str, Any]:
    """A TOML file as a dict; a missing or unparsable file is an InputError."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise InputError("config file not found", path=path) from None
    except tomllib.TOMLDecodeError as e:
        # tomllib's message ends with "(at line L, column C)"
        raise InputError(f"not valid TOML: {e}", path=path) from None
    except UnicodeDecodeError as e:  # TOML is UTF-8
        raise InputError(f"not UTF-8 (byte {e.start}: {e.object[e.start]:#04x})", path) from None
    except IsADirectoryError:
        raise InputError("is a directory, not a TOML file", path) from None


def _given(namespace: argparse.Namespace, groups: dict[str, type], names) -> Iterator[tuple]:
    """The options given, as (where, key, value) in the order that resolves them, later wins: the
    --config file's items (where: its path), then `--set key=value` (where "--set", value the text,
    None without "="), then the flags among `names` (where "flag")."""
    if getattr(namespace, "config", None):
        where = str(namespace.config)
        for key, value in _flat_items(load_toml(namespace.config), groups, where):
            yield where, key, value
    for item in getattr(namespace, "set", None) or []:
        key, sep, text = item.partition("=")
        yield "--set", key, text if sep else None
    for name in names:
        if name in namespace:
            yield "flag", name, getattr(namespace, name)


def resolved_option(namespace: argparse.Namespace, key: str) -> Any:
    """One option's value as build_config resolves it, before its type is checked (--set: the
    text), or None when not given; no other option is looked at."""
    value = None
    for _, name, given in _given(namespace, {}, [key]):
        value = given if name == key else value
    return value


def build_config(cls: type, namespace: argparse.Namespace) -> Any:
    """Resolve defaults < --config < --set < flags into an instance of `cls`."""
    fields = flat_fields(cls)
    valid = ", ".join(sorted(fields))
    values: dict[str, Any] = {}
    for where, key, value in _given(namespace, group_fields(cls), fields):
        if where == "flag":
            values[key] = value
            continue
        if key not in fields or value is None:
            if where != "--set":
                raise ConfigError(f"unknown config key '{key}' (valid keys: {valid})", path=where)
            item = key if value is None else f"{key}={value}"
            raise ConfigError(f"--set {item}: unknown key '{key}' (valid keys: {valid})")
        _, owner, field, _ = fields[key]
        kind, _, is_list = _field_type(owner, field)
        if where == "--set":
            values[key] = _set_value(key, value, kind, is_list, field)
        elif field.metadata.get("listable"):
            values[key] = _listable(value, key, where)
        elif dataclasses.is_dataclass(kind):
            values[key] = _tables(value, kind, key, where)
        else:
            values[key] = _coerce(value, kind, is_list, key, where)
    try:
        return from_options(cls, **values)
    except TypeError as e:  # a required field was not given
        raise ConfigError(str(e)) from None


def _set_value(key: str, text: str, kind: type, is_list: bool, field: dataclasses.Field) -> Any:
    """A `--set key=value` text as the field's value."""
    if dataclasses.is_dataclass(kind):
        raise ConfigError(f"--set {key}={text}: {key} is given in a TOML file ([[{key}]] tables)")
    if field.metadata.get("listable"):
        return text
    if is_list:
        return [_parse_text(t, kind, key) for t in text.split(",") if t]
    return _parse_text(text, kind, key)


def _tables(value: Any, kind: type, key: str, where: str) -> list:
    """A TOML array of tables as a list of `kind`, each key and value checked (k from 1)."""
    if not isinstance(value, list):
        raise ConfigError(f"{key} must be an array of tables ([[{key}]]), got {value!r}", where)
    own = {f.name: f for f in dataclasses.fields(kind)}
    tables = []
    for k, table in enumerate(value, 1):
        if not isinstance(table, dict):
            raise ConfigError(f"{key}[{k}] must be a table, got {table!r}", path=where)
        values = {}
        for name, inner in table.items():
            if name not in own:
                valid = ", ".join(sorted(own))
                message = f"unknown config key '{key}[{k}].{name}' (valid keys: {valid})"
                raise ConfigError(message, path=where)
            scalar, _, is_list = _field_type(kind, own[name])
            values[name] = _coerce(inner, scalar, is_list, f"{key}[{k}].{name}", where)
        tables.append(kind(**values))
    return tables


def _flat_items(table: dict[str, Any], groups: dict[str, type], where: str):
    """A TOML table's (key, value) pairs; a `[group]` table gives its own keys, which must be
    that group's."""
    for key, value in table.items():
        if key in groups and isinstance(value, dict):
            own = {f.name for f in dataclasses.fields(groups[key])}
            for name, inner in value.items():
                if name not in own:
                    valid = ", ".join(sorted(own))
                    raise ConfigError(
                        f"unknown config key '{key}.{name}' (valid keys: {valid})", path=where
                    )
                yield name, inner
        else:
            yield key, value


def config_to_toml(config: Any) -> str:
    """A config's options, flat, as TOML text; None values are left out (TOML has no null)."""
    lines, tables = [], []
    for key, value in flat_options(config).items():
        if value is None:
            continue
        if isinstance(value, list) and value and isinstance(value[0], dict):
            tables.extend([f"\n[[{key}]]", *_toml_lines(v)] for v in value)
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines + [line for table in tables for line in table]) + "\n"


def _toml_lines(table: dict) -> list[str]:
    return [f"{k} = {_toml_value(v)}" for k, v in table.items() if v is not None]


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def write_resolved_config(config: Any, out_dir: str | Path, name: str = "config.toml") -> Path:
    """Write the resolved config (defaults included) beside a command's outputs."""
    path = Path(out_dir) / name
    if path.parent.exists() and not path.parent.is_dir():
        raise InputError("out: a file is here; give a directory", path.parent)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(config_to_toml(config), encoding="utf-8")
    return path
