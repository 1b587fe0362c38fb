"""Build typed config dataclasses from plain dicts (YAML), rejecting anything unknown.

A hand-rolled validator of ~100 lines instead of pydantic models keeps configs as plain
dataclasses that the Python API constructs directly, while every error from a recipe
still names the file, the key path and the closest valid key.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Callable
from typing import Any, Literal, TypeVar, Union

import yaml

from slimbert.errors import RecipeError

T = TypeVar("T")


class RecipeLoader(yaml.SafeLoader):
    """YAML as a recipe writer means it: `scope: 2:4` is the text "2:4".

    PyYAML follows YAML 1.1, where `2:4` is a base-60 integer (124); YAML 1.2 dropped that.
    """


RecipeLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:int"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"),
)


def load_yaml(text: str) -> Any:
    """Parse recipe-like YAML (a file, or one --set value)."""
    return yaml.load(text, Loader=RecipeLoader)  # noqa: S506 - a SafeLoader subclass


def _where(source: str, path: str) -> str:
    return f"{source}: {path}" if path else source


class SchemaError(RecipeError):
    """A key or value that does not fit its config schema, knowing the key path it is at.

    The message is rendered from the path, so a caller whose users wrote the config another
    way (the CLI's ``--set epochs``, a Python keyword) names the key as they wrote it:
    ``raise exc.renamed(name_key)``.
    """

    def __init__(self, source: str, path: str, render: Callable[[str, str], str], *,
                 hint: str | None = None) -> None:
        self.source, self.path, self._render = source, path, render
        super().__init__(render(source, path), hint=hint)

    def renamed(self, name_key: Callable[[str], str], source: str | None = None) -> SchemaError:
        """The same error, its key path shown as ``name_key(path)`` (and from ``source``)."""
        error = SchemaError(source or self.source, self.path,
                            lambda src, path: self._render(src, name_key(path)), hint=self.hint)
        error._render = self._render  # a later rename starts from the key path again
        return error


def _error(source: str, path: str, text: str, hint: str | None = None) -> SchemaError:
    """"<source>: <path><text>", e.g. text " must be int, got 'three'."."""
    return SchemaError(source, path, lambda src, key: f"{_where(src, key)}{text}", hint=hint)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        (arg,) = typing.get_args(tp)
        return f"list of {_type_name(arg)}"
    if origin is dict:
        return "mapping"
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def _same_shape(value: Any, tp: Any) -> bool:
    """Whether ``value`` is the kind of container ``tp`` is (a mapping for a dataclass)."""
    if isinstance(value, dict):
        return dataclasses.is_dataclass(tp) or typing.get_origin(tp) is dict
    return isinstance(value, list) and typing.get_origin(tp) is list


def _coerce(value: Any, tp: Any, source: str, path: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        errors = []
        for option in typing.get_args(tp):
            try:
                return _coerce(value, option, source, path)
            except RecipeError as exc:
                errors.append((option, exc))
        shaped = [exc for option, exc in errors if _same_shape(value, option)]
        if len(shaped) == 1:  # a mapping meant as the one mapping option: its own error names the key
            raise shaped[0]
        raise _error(source, path, f" must be {_type_name(tp)}, got {value!r}.",
                     hint=errors[-1][1].hint if errors else None)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value in allowed:
            return value
        close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
        raise _error(source, path, f" is {value!r}; allowed: {', '.join(map(repr, allowed))}.",
                     hint=f"did you mean {close[0]!r}?" if close else None)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise _error(source, path, f" must be a list, got {value!r}.")
        return [_coerce(v, item_tp, source, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise _error(source, path, f" must be a mapping, got {value!r}.")
        _, val_tp = typing.get_args(tp)
        return {str(k): _coerce(v, val_tp, source, f"{path}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, source=source, path=path)
    if tp is type(None):
        if value is None:
            return None
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML reads "5e-5" as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(tp, type) and isinstance(value, tp):
        return value
    raise _error(source, path, f" must be {_type_name(tp)}, got {value!r}.")


def from_dict(cls: type[T], data: Any, *, source: str = "recipe", path: str = "") -> T:
    """Instantiate dataclass ``cls`` from ``data``, checking every key and type."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise _error(source, path, f" must be a mapping, got {data!r}.")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(str(key), list(fields), n=1)
        raise SchemaError(
            source, path, lambda src, at: f"{src}: unknown key {key!r}{f' in {at}' if at else ''}. "
            f"Valid keys: {', '.join(fields)}.",
            hint=f"did you mean {close[0]!r}?" if close else "remove it or check the spelling.",
        )
    kwargs = {}
    for name, f in fields.items():
        sub = f"{path}.{name}" if path else name
        if name in data:
            kwargs[name] = _coerce(data[name], hints[name], source, sub)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise SchemaError(source, sub, lambda src, key: f"{src}: missing required key {key!r}.")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:  # __post_init__ range checks
        raise _error(source, path, f": {exc}") from None


def field_defaults(cls: Any) -> dict[str, Any]:
    """The default of every field of config dataclass ``cls`` that has one, in ``to_dict`` form."""
    defaults = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            defaults[f.name] = to_dict(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            defaults[f.name] = to_dict(f.default_factory())
    return defaults


def to_dict(obj: Any) -> Any:
    """Plain JSON-able form of a config dataclass (for manifests and hashing)."""
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj
