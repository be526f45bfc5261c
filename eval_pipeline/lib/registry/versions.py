"""Registered model versions: what can be evaluated, and how to get its outputs.

The registry is an append-only JSONL file (``DataHome.registry``, ``registry/models.jsonl``): one
:class:`ModelVersion` per line, keyed by ``name:version``. A version is registered once and never
edited, so an eval result that names ``support-assistant:2024-06`` always means the same endpoint,
model id and parameters. A changed model is a new version.

No Dagster import here: the registry assets, the sensor that turns new lines into dynamic
partitions and the CLI all use this module.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from eval_pipeline.lib.core.jsonl import JSONLineError, json_objects

__all__ = [
    "ROLES",
    "PROVIDERS",
    "SUPPORTED_PARAMS",
    "ModelVersion",
    "RegistryError",
    "ModelRegistry",
    "parse_model_ref",
]

ROLES = ("baseline", "candidate")
PROVIDERS = ("openai-compatible", "recorded")
# The generation parameters a provider actually sends. Anything else is refused at registration:
# a parameter that is stored but silently not used would make two "different" versions identical.
SUPPORTED_PARAMS = ("temperature", "max_tokens")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
# An environment variable name. A real key ("sk-...") does not match, so one pasted here by
# mistake is refused instead of being written to a file that is shared and versioned.
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def _utc_text(when: datetime) -> str:
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class ModelVersion(BaseModel):
    """One registered model version.

    Attributes:
        name: The model's name, e.g. ``support-assistant`` (letters, digits, ``._-``).
        version: Its version, e.g. ``2024-06`` (letters, digits, ``._+-``; never ``:``).
        provider: ``openai-compatible`` (a live endpoint) or ``recorded`` (a JSONL file of
            outputs produced earlier, replayed).
        base_url: The endpoint, e.g. ``http://localhost:8000/v1`` (openai-compatible only).
        model: The endpoint's model id (openai-compatible only).
        api_key_env: The NAME of the environment variable holding the API key; the key itself
            is never stored.
        recorded_path: The recording file (recorded only; absolute once registered).
        params: Generation parameters sent with every request: ``temperature``, ``max_tokens``.
        role: ``baseline`` (what candidates are compared with) or ``candidate``.
        registered_at: When it was registered, UTC (defaults to now).
        description: Free text for people.
    """

    # Inputs stay out of error texts: a key pasted into api_key_env must not reach a log. The
    # messages below quote the values that are safe to show.
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    name: str
    version: str
    provider: Literal["openai-compatible", "recorded"]
    # validate_default: the provider-dependent checks below must also run when a field is left out.
    base_url: str | None = Field(default=None, validate_default=True)
    model: str | None = Field(default=None, validate_default=True)
    api_key_env: str | None = None
    recorded_path: str | None = Field(default=None, validate_default=True)
    params: dict[str, Any] = Field(default_factory=dict)
    role: Literal["baseline", "candidate"] = "candidate"
    registered_at: datetime = Field(default_factory=_utc_now)
    description: str | None = None

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"{value!r} is not a valid name: use letters, digits, '.', '_' and '-', "
                             "starting with a letter or digit (e.g. support-assistant)")
        return value

    @field_validator("version")
    @classmethod
    def _check_version(cls, value: str) -> str:
        if not _VERSION.match(value):
            raise ValueError(f"{value!r} is not a valid version: use letters, digits, '.', '_', '+' "
                             "and '-', starting with a letter or digit (e.g. 2024-06)")
        return value

    # Field validators rather than one model validator, so that an error carries the field's name
    # (the registry reports it with the file and line). ``provider`` is declared before these
    # fields, so it is in ``info.data`` when it was valid.
    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        provider = info.data.get("provider")
        if provider == "openai-compatible":
            if not value:
                raise ValueError("base_url is required for provider 'openai-compatible' "
                                 "(e.g. http://localhost:8000/v1)")
            if not value.startswith(("http://", "https://")):
                raise ValueError(f"base_url {value!r} must start with http:// or https://")
        elif provider == "recorded" and value is not None:
            raise ValueError("base_url is not allowed for provider 'recorded' (its outputs come "
                             "from recorded_path); use provider 'openai-compatible' for an endpoint")
        return value

    @field_validator("model")
    @classmethod
    def _check_model(cls, value: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("provider") == "openai-compatible" and not value:
            raise ValueError("model (the endpoint's model id) is required for provider 'openai-compatible'")
        return value

    @field_validator("api_key_env")
    @classmethod
    def _check_api_key_env(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME.match(value):
            raise ValueError(f"api_key_env must be the NAME of an environment variable (e.g. "
                             f"OPENAI_API_KEY), not {value[:4]!r}...: the key itself is never stored")
        return value

    @field_validator("recorded_path")
    @classmethod
    def _check_recorded_path(cls, value: str | None, info: ValidationInfo) -> str | None:
        provider = info.data.get("provider")
        if provider == "recorded" and not value:
            raise ValueError("recorded_path is required for provider 'recorded'")
        if provider == "openai-compatible" and value is not None:
            raise ValueError("recorded_path is not allowed for provider 'openai-compatible'; "
                             "use provider 'recorded' to replay a recording")
        return value

    @field_validator("params")
    @classmethod
    def _check_params(cls, value: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(value) - set(SUPPORTED_PARAMS))
        if unknown:
            raise ValueError(f"unsupported parameter {', '.join(map(repr, unknown))}; "
                             f"the supported ones are {list(SUPPORTED_PARAMS)}")
        temperature = value.get("temperature")
        if temperature is not None and (isinstance(temperature, bool) or not isinstance(temperature, (int, float))
                                        or not 0 <= temperature <= 2):
            raise ValueError(f"temperature must be a number from 0 to 2, got {temperature!r}")
        max_tokens = value.get("max_tokens")
        if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int)
                                       or max_tokens < 1):
            raise ValueError(f"max_tokens must be a positive integer, got {max_tokens!r}")
        return value

    @field_validator("registered_at")
    @classmethod
    def _check_registered_at(cls, value: datetime) -> datetime:
        # A naive time is ambiguous across machines; refuse it rather than guess its zone.
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("registered_at must carry a timezone (e.g. 2026-03-01T12:00:00Z)")
        return value.astimezone(timezone.utc)

    @property
    def key(self) -> str:
        """``name:version``, the registry's key (and the dynamic partition key)."""
        return f"{self.name}:{self.version}"

    def to_json_line(self) -> str:
        """One registry line (no trailing newline); times in UTC with ``Z``."""
        return json.dumps(self.model_dump(mode="json"), ensure_ascii=False, separators=(",", ":"))


def parse_model_ref(text: str) -> tuple[str, str]:
    """``"NAME:VERSION"`` -> ``(name, version)``.

    Raises:
        ValueError: when ``text`` is not of that form, saying what the form is.
    """
    parts = text.strip().split(":")
    if len(parts) == 2 and _NAME.match(parts[0]) and _VERSION.match(parts[1]):
        return parts[0], parts[1]
    raise ValueError(f"model reference {text!r} is not of the form NAME:VERSION "
                     "(e.g. support-assistant:2024-06; the name uses letters, digits, '.', '_', '-', "
                     "the version also '+', and neither contains ':')")


class RegistryError(ValueError):
    """The registry file is invalid, or a registration is refused; the message says where and why."""


def _describe_validation_error(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        loc = ".".join(str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        problems.append(f"field {loc!r}: {message}" if loc else message)
    return "; ".join(problems)


class ModelRegistry:
    """The append-only JSONL registry at ``path`` (its folder is created on the first write).

    The file is read on every call rather than cached: other processes (the CLI, another Dagster
    run) append to it.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"ModelRegistry({str(self.path)!r})"

    def _parse(self, text: str) -> list[tuple[int, ModelVersion]]:
        """(line number, version) for every non-blank line, or RegistryError at the first bad one."""
        rows: list[tuple[int, ModelVersion]] = []
        seen: dict[str, int] = {}
        try:
            lines = list(json_objects(text.splitlines(), self.path))
        except JSONLineError as exc:
            raise RegistryError(f"{exc}; fix or remove the line") from exc
        for number, where, payload in lines:
            try:
                version = ModelVersion.model_validate(payload)
            except ValidationError as exc:
                raise RegistryError(f"{where}, {_describe_validation_error(exc)}") from exc
            if version.key in seen:
                raise RegistryError(f"{self.path} lines {seen[version.key]} and {number} both register "
                                    f"{version.key}; a version is registered once: remove one of them "
                                    "or give it a new version")
            seen[version.key] = number
            rows.append((number, version))
        return rows

    def _rows(self) -> list[tuple[int, ModelVersion]]:
        try:
            with open(self.path, "rb") as handle:
                # Shared lock: never read half of a line that register() is appending.
                fcntl.flock(handle, fcntl.LOCK_SH)
                raw = handle.read()
        except FileNotFoundError:
            return []
        return self._parse(self._decode(raw))

    def _decode(self, raw: bytes) -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw.count(b"\n", 0, exc.start) + 1
            raise RegistryError(f"{self.path} line {line}: not UTF-8 text (byte {raw[exc.start]:#04x}); "
                                "fix or remove the line") from None

    def load(self) -> list[ModelVersion]:
        """Every registered version, in registration order; ``[]`` when the file does not exist.

        Raises:
            RegistryError: for a line that is not JSON or not a valid version (naming the file,
                the line and the field), or a key registered twice (naming both lines).
        """
        return [version for _, version in self._rows()]

    def register(self, mv: ModelVersion) -> ModelVersion:
        """Append ``mv`` and return it as stored (a recorded_path made absolute).

        Raises:
            RegistryError: when ``mv.key`` is already registered, when a recording does not
                exist, or when the registry file itself is invalid.
        """
        if mv.provider == "recorded":
            recording = Path(mv.recorded_path or "").expanduser().resolve()
            if not recording.is_file():
                raise RegistryError(f"cannot register {mv.key}: recorded_path {recording} does not exist "
                                    "or is not a file; write the recording first")
            from eval_pipeline.lib.registry.providers import RecordedProvider  # providers imports this module

            try:  # a recording that cannot be replayed is refused now, not when the evaluation runs
                RecordedProvider(recording)
            except (OSError, ValueError) as exc:
                raise RegistryError(f"cannot register {mv.key}: {exc}") from None
            # Absolute, so the registration means the same file from any working directory.
            mv = mv.model_copy(update={"recorded_path": str(recording)})

        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+b") as handle:
            # Check and append under one exclusive lock, re-reading inside it: two processes
            # registering the same key cannot both see it absent.
            fcntl.flock(handle, fcntl.LOCK_EX)
            handle.seek(0)
            text = self._decode(handle.read())
            for number, existing in self._parse(text):
                if existing.key == mv.key:
                    raise RegistryError(
                        f"{mv.key} is already registered (line {number} of {self.path}, registered "
                        f"{_utc_text(existing.registered_at)} as {existing.role}); register a new version instead")
            _append_line(handle, text, mv.to_json_line())
        return mv

    def get(self, key: str) -> ModelVersion:
        """The version registered as ``key`` (``name:version``).

        Raises:
            KeyError: when it is not registered, listing the keys that are.
        """
        versions = self.load()
        for version in versions:
            if version.key == key:
                return version
        known = ", ".join(version.key for version in versions) or "none, the registry is empty"
        raise KeyError(f"{key!r} is not registered in {self.path} (registered: {known})")

    def keys(self) -> list[str]:
        """Registered keys, in registration order."""
        return [version.key for version in self.load()]

    def baseline_for(self, name: str) -> ModelVersion | None:
        """The most recently registered baseline of model ``name``, or None when it has none."""
        baselines = [version for version in self.load() if version.name == name and version.role == "baseline"]
        return baselines[-1] if baselines else None


def _append_line(handle: IO[bytes], existing: str, line: str) -> None:
    # A file edited by hand may lack its final newline: without one, the new line would be glued
    # to the last one and both would be lost to the parser.
    prefix = "\n" if existing and not existing.endswith("\n") else ""
    handle.write((prefix + line + "\n").encode("utf-8"))
    handle.flush()
    os.fsync(handle.fileno())
