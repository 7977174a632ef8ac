"""Reading YAML onto typed dataclasses: strict overrides (an unknown key is an error naming the
key and the file), values checked against the field types, `extends:` chains of YAML files and
`--set section.key=value` overrides. ``ser_keras.config`` holds the schema that these fill."""

from __future__ import annotations

import dataclasses
import pathlib
import typing

import yaml

from ser_keras.errors import SerKerasError


def apply_values(obj, values: dict, source: str, prefix: str = "") -> None:
    """Override dataclass `obj` in place from a nested dict, rejecting unknown keys."""
    known = {f.name: f for f in dataclasses.fields(obj)}
    hints = typing.get_type_hints(type(obj))
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if key not in known:
            raise SerKerasError(f"{source}: unknown config key '{dotted}'")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise SerKerasError(f"{source}: '{dotted}' must be a mapping, got {value!r}")
            apply_values(current, value, source, prefix=dotted + ".")
        else:
            setattr(obj, key, _coerce(value, hints[key], dotted, source))


def _coerce(value, hint, dotted: str, source: str):
    """Check/convert a YAML or --set value against the field's type hint."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union and type(None) in args:
        if value is None:
            return None
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    try:
        if origin in (list, typing.List):
            if not isinstance(value, (list, tuple)):
                value = [value]
            return [_coerce(v, args[0], dotted, source) for v in value]
        if hint is bool:
            if isinstance(value, str):
                if value.lower() in ("true", "yes", "1", "on"):
                    return True
                if value.lower() in ("false", "no", "0", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if hint is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if hint is float:
            return float(value)
        if hint is str:
            return str(value)
    except (TypeError, ValueError):
        raise SerKerasError(
            f"{source}: '{dotted}' expects {getattr(hint, '__name__', hint)}, got {value!r}"
        ) from None
    return value


def parse_override(text: str) -> tuple:
    """'train.epochs=5' -> (['train', 'epochs'], 5), the value parsed as YAML."""
    if "=" not in text:
        raise SerKerasError(f"--set {text!r}: expected section.key=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def nest(path: list, value) -> dict:
    out = value
    for part in reversed(path):
        out = {part: out}
    return out


def load_yaml(path: pathlib.Path) -> dict:
    if not path.is_file():
        raise SerKerasError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise SerKerasError(f"{path}: not valid YAML ({exc.__class__.__name__})") from None
    if not isinstance(data, dict):
        raise SerKerasError(f"{path}: top level must be a mapping")
    return data


def _merge(base: dict, override: dict) -> dict:
    """`override` on top of `base`, mappings merged key by key."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_experiment_yaml(path: pathlib.Path, seen: typing.Tuple[pathlib.Path, ...] = ()) -> dict:
    """An experiment YAML with its `extends: <file>` chain resolved (relative to the file)."""
    path = pathlib.Path(path)
    if path.resolve() in seen:
        raise SerKerasError(f"{path}: 'extends' loops back to itself")
    data = load_yaml(path)
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise SerKerasError(f"{path}: 'extends' must name a YAML file, got {parent!r}")
    return _merge(load_experiment_yaml(path.parent / parent, seen + (path.resolve(),)), data)
