"""A registered model version's outputs on eval examples.

An eval example is a dict with at least ``example_id`` and ``messages`` (the conversation up to
the user's turn: system prompt and injected context included). Two kinds of provider produce an
output for it, both with ``model_id`` and ``generate(example) -> str``:

* :class:`RecordedProvider` replays a JSONL file of outputs the model produced earlier, found by
  example id or by the prompt's hash (:func:`prompt_key`), so a version that cannot be called
  again (a retired endpoint, a vendor's batch export) can still be evaluated;
* :class:`OpenAIModelProvider` calls an OpenAI-compatible endpoint through the judge's
  :class:`~eval_pipeline.lib.labeling.judge.OpenAICompatibleProvider` (one HTTP client, and the ``openai``
  client's own retries).

:func:`provider_for` builds the right one from a :class:`~eval_pipeline.lib.registry.versions.ModelVersion`,
and :func:`generate_outputs` runs one over many examples, turning every failure into a result.
No Dagster import here.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping, Protocol, Sequence

from eval_pipeline.lib.core.jsonl import json_objects
from eval_pipeline.lib.labeling.judge import OpenAICompatibleProvider, ProviderError, ProviderResponse
from eval_pipeline.lib.registry.versions import ModelVersion

__all__ = [
    "ModelProvider",
    "OutputResult",
    "OutputStatus",
    "RecordedProvider",
    "OpenAIModelProvider",
    "prompt_key",
    "write_recording",
    "provider_for",
    "generate_outputs",
]

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def prompt_key(messages: Sequence[Mapping[str, Any]]) -> str:
    """sha256 hex of the canonical JSON of ``[[role, content], ...]``.

    Only role and content count: ``name`` and any other key are ignored, and a missing or None
    role or content counts as ``""``, so the same prompt gets the same key whether it comes from
    the logs, the eval set or a recording file.
    """
    pairs = []
    for message in messages:
        role = message.get("role")
        content = message.get("content")
        pairs.append(["" if role is None else role, "" if content is None else content])
    canonical = json.dumps(pairs, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


OutputStatus = Literal["ok", "error"]


@dataclass(frozen=True)
class OutputResult:
    """One example's output, or why there is none.

    Attributes:
        example_id: The example it is for.
        status: ``"ok"`` (``output`` is set) or ``"error"`` (``error`` is set).
        output: The model's text (None on error).
        error: What went wrong (None when ok).
        attempts: Requests made for it, retries included (1 for a recording).
        latency_ms: Wall time of the call, retries and their waits included.
    """

    example_id: str
    status: OutputStatus
    output: str | None
    error: str | None
    attempts: int
    latency_ms: float | None


class ModelProvider(Protocol):
    """What :func:`generate_outputs` needs. ``model_id`` identifies the outputs' source."""

    model_id: str

    def generate(self, example: Mapping[str, Any]) -> str:
        """The model's output for ``example``; raises (ProviderError preferably) when there is none."""
        ...


def _messages_of(example: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    messages = example.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, Mapping) for m in messages):
        raise ValueError(f"example {example.get('example_id')!r} has no 'messages' list of "
                         "{role, content} objects")
    return messages


# --------------------------------------------------------------------------------------------
# Recorded outputs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Recorded:
    where: str  # "<file> line 3" or "row 3": where it came from, for messages
    example_id: str | None
    prompt_sha256: str | None
    output: str | None
    error: str | None


def _read_recorded_row(row: Any, where: str) -> _Recorded:
    """One recording row, validated; ``where`` starts every error message."""
    if not isinstance(row, Mapping):
        raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}")
    example_id = row.get("example_id")
    if example_id is not None and (not isinstance(example_id, str) or not example_id):
        raise ValueError(f"{where}, field 'example_id': must be a non-empty string, got {example_id!r}")
    key = row.get("prompt_sha256")
    if key is not None and (not isinstance(key, str) or not _SHA256.match(key)):
        raise ValueError(f"{where}, field 'prompt_sha256': must be 64 lower-case hex characters, got {key!r}")
    messages = row.get("messages")
    if messages is not None:
        if not isinstance(messages, list) or not all(isinstance(m, Mapping) for m in messages):
            raise ValueError(f"{where}, field 'messages': must be a list of {{role, content}} objects")
        from_messages = prompt_key(messages)
        if key is not None and key != from_messages:
            # Both given and different: one of them was edited, and there is no telling which.
            raise ValueError(f"{where}, field 'prompt_sha256': {key[:12]}... does not match the line's "
                             f"messages (sha256 {from_messages[:12]}...); keep only one of the two")
        key = from_messages
    if example_id is None and key is None:
        raise ValueError(f"{where}, field 'example_id': neither example_id nor prompt_sha256 (nor messages) "
                         "is present, so no example can find this output; add one")
    output, error = row.get("output"), row.get("error")
    if output is not None and not isinstance(output, str):
        raise ValueError(f"{where}, field 'output': must be a string, got {type(output).__name__}")
    if error is not None and (not isinstance(error, str) or not error):
        raise ValueError(f"{where}, field 'error': must be a non-empty string, got {error!r}")
    if output is None and error is None:
        raise ValueError(f"{where}, field 'output': missing; a line needs the output (a string) "
                         "or the error the model gave")
    if output is not None and error is not None:
        raise ValueError(f"{where}, field 'error': a line has an output or an error, not both")
    return _Recorded(where, example_id, key, output, error)


class _RecordingIndex:
    """Recorded outputs by example id and by prompt key, refusing the duplicates that would make
    a lookup a guess."""

    def __init__(self) -> None:
        self.by_id: dict[str, _Recorded] = {}
        self.by_prompt: dict[str, _Recorded] = {}
        # Prompts recorded several times, each under its own example id (the same question asked
        # twice in the logs): fine by id, ambiguous by prompt alone.
        self.ambiguous: dict[str, tuple[_Recorded, _Recorded]] = {}

    def add(self, recorded: _Recorded) -> None:
        if recorded.example_id is not None:
            first = self.by_id.get(recorded.example_id)
            if first is not None:
                raise ValueError(f"{recorded.where}, field 'example_id': {recorded.example_id!r} is already "
                                 f"recorded ({first.where}); keep one output per example")
            self.by_id[recorded.example_id] = recorded
        key = recorded.prompt_sha256
        if key is None:
            return
        first = self.by_prompt.get(key)
        if first is None:
            self.by_prompt[key] = recorded
        elif first.example_id is None or recorded.example_id is None:
            # A line without an id is found by its prompt only: two candidates would be a guess.
            raise ValueError(f"{recorded.where}, field 'prompt_sha256': prompt {key[:12]}... is already "
                             f"recorded ({first.where}); keep one output per prompt, or give each its example_id")
        else:
            self.ambiguous.setdefault(key, (first, recorded))


class RecordedProvider:
    """Replays the outputs recorded in the JSONL file at ``path``.

    Each line: ``example_id`` and/or ``prompt_sha256`` (or ``messages``, hashed with
    :func:`prompt_key`), and ``output`` (a string) or ``error`` (a failure, replayed as one).
    An example is found by its id first, then by its prompt. The whole file is checked on
    construction.

    Raises:
        ValueError: for a bad line or a key recorded twice, naming the file, the line and the field.
        FileNotFoundError: when the file does not exist.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.model_id = f"recorded:{self.path.name}"
        self._index = _RecordingIndex()
        raw = self.path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw.count(b"\n", 0, exc.start) + 1
            raise ValueError(f"{self.path} line {line}: not UTF-8 text (byte {raw[exc.start]:#04x})") from None
        for _, where, row in json_objects(text.splitlines(), self.path):
            self._index.add(_read_recorded_row(row, where))

    def __repr__(self) -> str:
        return f"RecordedProvider({str(self.path)!r})"

    def close(self) -> None:
        """Nothing to release (the file is read once); here so that every provider can be closed."""

    def _find(self, example: Mapping[str, Any]) -> _Recorded:
        example_id = example.get("example_id")
        key = prompt_key(_messages_of(example))
        recorded = self._index.by_id.get(example_id) if isinstance(example_id, str) else None
        reused_id = recorded is not None and recorded.prompt_sha256 not in (None, key)
        if reused_id:
            # The id was recorded for another prompt (a rebuilt eval set): replaying that output
            # would score an answer to a different question. Only the prompt can still match.
            recorded = None
        if recorded is None and key in self._index.by_prompt:
            if key in self._index.ambiguous:
                first, second = self._index.ambiguous[key]
                raise ProviderError(f"no recorded output for example {example_id} by id, and its prompt "
                                    f"(sha256 {key[:12]}) is recorded under several other ids ({first.where}; "
                                    f"{second.where}); record it under id {example_id!r}")
            recorded = self._index.by_prompt[key]
        if recorded is None:
            hint = " (its id is recorded, but for another prompt)" if reused_id else ""
            raise ProviderError(f"no recorded output for example {example_id} (prompt sha256 {key[:12]}) "
                                f"in {self.path}{hint}")
        return recorded

    def generate_response(self, example: Mapping[str, Any]) -> ProviderResponse:
        """The recorded output as a :class:`ProviderResponse` (one attempt, no usage)."""
        recorded = self._find(example)
        if recorded.error is not None:
            raise ProviderError(f"recorded error ({recorded.where}): {recorded.error}")
        return ProviderResponse(text=recorded.output or "", model=self.model_id)

    def generate(self, example: Mapping[str, Any]) -> str:
        """The recorded output for ``example``.

        Raises:
            ProviderError: when nothing is recorded for it, or what is recorded is an error.
        """
        return self.generate_response(example).text


def write_recording(path: str | Path, rows: Iterable[Mapping[str, Any]]) -> Path:
    """Write ``rows`` as a recording file that :class:`RecordedProvider` reads.

    Args:
        path: The file to write (replaced; its folder is created).
        rows: Dicts with ``example_id`` and/or ``prompt_sha256`` (or ``messages``, stored as its
            ``prompt_sha256``), and ``output`` or ``error``.

    Returns:
        The path written.

    Raises:
        ValueError: for a row the provider would refuse (naming the row and the field), before
            anything is written.
    """
    path = Path(path)
    index = _RecordingIndex()
    lines = []
    for number, row in enumerate(rows):
        recorded = _read_recorded_row(row, f"row {number}")
        index.add(recorded)
        line: dict[str, Any] = {}
        if recorded.example_id is not None:
            line["example_id"] = recorded.example_id
        if recorded.prompt_sha256 is not None:
            line["prompt_sha256"] = recorded.prompt_sha256
        if recorded.error is not None:
            line["error"] = recorded.error
        else:
            line["output"] = recorded.output
        lines.append(json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    # Through a temporary file and a rename: a reader never sees a half-written recording.
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.writelines(lines)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


# --------------------------------------------------------------------------------------------
# A live OpenAI-compatible endpoint
# --------------------------------------------------------------------------------------------


class OpenAIModelProvider:
    """A model version served by an OpenAI-compatible endpoint.

    Args:
        base_url: The endpoint, e.g. ``http://localhost:8000/v1``.
        model: The endpoint's model id.
        api_key: The key (None for a local server that needs none).
        params: ``temperature`` and ``max_tokens``; one left out is left out of the request,
            so the endpoint's default applies (never the judge's temperature 0).
        timeout, max_retries: As for :class:`OpenAICompatibleProvider` (the ``openai`` client's
            own retries, with its own backoff).
    """

    def __init__(self, base_url: str, model: str, api_key: str | None = None,
                 params: Mapping[str, Any] | None = None, *, timeout: float = 60, max_retries: int = 3) -> None:
        params = dict(params or {})
        self.params = params
        self._chat = OpenAICompatibleProvider(base_url, model, api_key, timeout=timeout, max_retries=max_retries,
                                              temperature=params.get("temperature"),
                                              max_tokens=params.get("max_tokens"))

    @property
    def model_id(self) -> str:
        """``base_url|model`` (never the key)."""
        return self._chat.model_id

    @property
    def requests_made(self) -> int:
        """HTTP requests sent so far, retries included."""
        return self._chat.requests_made

    def __repr__(self) -> str:
        return f"OpenAIModelProvider(model_id={self.model_id!r})"

    def close(self) -> None:
        self._chat.close()

    def __enter__(self) -> "OpenAIModelProvider":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def generate_response(self, example: Mapping[str, Any]) -> ProviderResponse:
        """The endpoint's completion of the example's messages, with attempts and usage."""
        # Role and content only: ``name`` and logging fields are not part of the prompt, and
        # some servers reject keys they do not know.
        messages = [{"role": m.get("role"), "content": m.get("content")} for m in _messages_of(example)]
        return self._chat.complete(messages, json_schema=None)

    def generate(self, example: Mapping[str, Any]) -> str:
        """The model's output text for ``example``.

        Raises:
            ProviderError: when the endpoint gave no completion (after the retries).
        """
        return self.generate_response(example).text


# --------------------------------------------------------------------------------------------
# From a registration, and over many examples
# --------------------------------------------------------------------------------------------


def provider_for(mv: ModelVersion, *, timeout: float = 60, max_retries: int = 3,
                 env: Mapping[str, str] | None = None) -> RecordedProvider | OpenAIModelProvider:
    """The provider for a registered version.

    Args:
        mv: The registered version.
        timeout, max_retries: For a live endpoint (ignored for a recording).
        env: Where ``mv.api_key_env`` is looked up; ``os.environ`` by default.

    Raises:
        ValueError: when the registration names an API key variable that is not set.
    """
    if mv.provider == "recorded":
        return RecordedProvider(mv.recorded_path or "")
    api_key = None
    if mv.api_key_env:
        environment = os.environ if env is None else env
        api_key = environment.get(mv.api_key_env)
        if not api_key:
            raise ValueError(f"{mv.key} reads its API key from the environment variable {mv.api_key_env}, "
                             f"which is not set; set {mv.api_key_env} before running")
    return OpenAIModelProvider(mv.base_url or "", mv.model or "", api_key, mv.params, timeout=timeout,
                               max_retries=max_retries)


def _generate_one(provider: ModelProvider, example: Mapping[str, Any]) -> OutputResult:
    example_id = str(example.get("example_id")) if isinstance(example, Mapping) else repr(example)
    started = time.perf_counter()
    try:
        # The richer call when the provider has it: the attempts a retried success took.
        respond = getattr(provider, "generate_response", None)
        if respond is not None:
            response = respond(example)
            output, attempts = response.text, response.attempts
        else:
            output, attempts = provider.generate(example), 1
    except Exception as exc:  # any failure is this example's result, never the batch's
        latency = (time.perf_counter() - started) * 1000
        if isinstance(exc, ProviderError):
            return OutputResult(example_id, "error", None, str(exc), exc.attempts, latency)
        return OutputResult(example_id, "error", None, f"{type(exc).__name__}: {exc}", 1, latency)
    return OutputResult(example_id, "ok", output, None, attempts, (time.perf_counter() - started) * 1000)


def generate_outputs(provider: ModelProvider, examples: Iterable[Mapping[str, Any]],
                     max_workers: int = 4) -> list[OutputResult]:
    """``provider``'s output for every example, at most ``max_workers`` calls at a time.

    Returns:
        One :class:`OutputResult` per example, in input order. A failure (an exception from the
        provider, or a malformed example) is an ``error`` result with its message: never
        dropped, never raised.
    """
    if max_workers < 1:
        raise ValueError(f"max_workers must be >= 1, got {max_workers}")
    work = list(examples)
    if not work:
        return []
    with ThreadPoolExecutor(max_workers=min(max_workers, len(work)), thread_name_prefix="outputs") as pool:
        return list(pool.map(lambda example: _generate_one(provider, example), work))
