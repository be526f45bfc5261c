"""Settings declared once.

A config dataclass of ``lib/`` declares each field a person may set with :func:`setting`: its name,
type (a ``Literal`` for a choice) and default as usual, and a one-line ``doc``. The Dagster
resources of ``defs/resources.py`` take their fields from there (:func:`declared`) and build the
lib config back from their values (:func:`build`), so no setting's name, type, default or doc is
written twice. Plain Python (no dagster import): the lib functions keep taking their dataclasses.
"""

from __future__ import annotations

import types
from collections.abc import Mapping as AbcMapping
from dataclasses import MISSING, dataclass, fields
from dataclasses import field as dataclass_field
from typing import Any, Literal, Mapping, Optional, Union, get_args, get_origin, get_type_hints

__all__ = ["setting", "Declared", "declared", "build", "choices"]

_DOC = "eval_pipeline.setting_doc"


def setting(default: Any = MISSING, *, doc: str, default_factory: Any = MISSING) -> Any:
    """A dataclass field that is also a setting: ``doc`` is what the resource (and so the Dagster
    UI's launchpad) shows for it."""
    return dataclass_field(default=default, default_factory=default_factory, metadata={_DOC: doc})


@dataclass(frozen=True)
class Declared:
    """One setting as its config class declares it.

    annotation  the type as a settings field takes it: ``tuple[X, ...]`` as ``list[X]``, a
                mapping as ``dict``, ``X | None`` as ``Optional[X]`` (the forms Dagster's config
                schema understands); a ``Literal`` stays one (a choice the launchpad offers).
    """

    owner: type
    name: str
    annotation: Any
    default: Any
    doc: str


def _plain(hint: Any) -> Any:
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        args = get_args(hint)
        rest = [_plain(a) for a in args if a is not type(None)]
        inner = rest[0] if len(rest) == 1 else Union[tuple(rest)]  # type: ignore[valid-type]
        return Optional[inner] if len(rest) < len(args) else inner
    if origin is tuple:
        args = get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return list[_plain(args[0])]  # type: ignore[misc]
        raise TypeError(f"{hint}: only tuple[X, ...] can be a setting")
    if origin in (dict, AbcMapping, Mapping):
        key, value = get_args(hint)
        return dict[_plain(key), _plain(value)]  # type: ignore[misc]
    return hint


def declared(owner: type, name: str) -> Declared:
    """The setting ``name`` of the config dataclass ``owner``; a ``TypeError`` when ``owner`` has
    no such field or did not declare it with :func:`setting`."""
    found = {f.name: f for f in fields(owner)}.get(name)
    if found is None or _DOC not in found.metadata:
        raise TypeError(f"{owner.__name__}.{name} is not a setting (declare it with lib.settings.setting)")
    default = found.default if found.default is not MISSING else found.default_factory()  # type: ignore[misc]
    annotation = _plain(get_type_hints(owner)[name])
    if isinstance(default, tuple) and get_origin(annotation) is list:
        default = list(default)
    return Declared(owner, name, annotation, default, found.metadata[_DOC])


def build(owner: type, values: Mapping[str, Any], **extra: Any) -> Any:
    """``owner(**values, **extra)`` with a list given for a tuple field made a tuple and a mapping
    copied (settings hold lists and dicts; the frozen configs want tuples)."""
    hints = get_type_hints(owner)
    out: dict[str, Any] = {}
    for key, value in {**values, **extra}.items():
        if isinstance(value, list) and get_origin(hints.get(key)) is tuple:
            value = tuple(value)
        elif isinstance(value, dict):
            value = dict(value)
        out[key] = value
    return owner(**out)


def choices(hint: Any) -> tuple[Any, ...]:
    """The values of a ``Literal`` type (e.g. for an error message of a lib check)."""
    if get_origin(hint) is not Literal:
        raise TypeError(f"{hint} is not a Literal")
    return get_args(hint)
