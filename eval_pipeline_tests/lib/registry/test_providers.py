"""Tests for eval_pipeline.lib.registry.providers: recorded outputs, and a live endpoint through a real
local HTTP server speaking the OpenAI protocol (the real ``openai`` client in between)."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from openai_server import Reply, ScriptedServer

from eval_pipeline.lib.labeling.judge import ProviderError
from eval_pipeline.lib.registry.providers import (
    OpenAIModelProvider,
    OutputResult,
    RecordedProvider,
    generate_outputs,
    prompt_key,
    provider_for,
    write_recording,
)
from eval_pipeline.lib.registry.versions import ModelVersion

SYSTEM = {"role": "system", "content": "You are a bank support assistant.\n<context>Cards arrive in 5 days.</context>",
          "name": None}


def example(example_id: str, question: str) -> dict:
    return {"example_id": example_id, "slice": "cards",
            "messages": [SYSTEM, {"role": "user", "content": question, "name": "customer-1"}]}


EXAMPLES = [example("ex-1", "How long does a card take to arrive?"),
            example("ex-2", "Can I freeze my card?"),
            example("ex-3", "Why was I charged a fee?")]


def write_lines(path: Path, *rows: Any) -> Path:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


# --------------------------------------------------------------------------------------------
# prompt_key
# --------------------------------------------------------------------------------------------


def test_prompt_key_is_the_sha256_of_role_content_pairs():
    messages = EXAMPLES[0]["messages"]
    canonical = json.dumps([[m["role"], m["content"]] for m in messages], ensure_ascii=False, separators=(",", ":"))
    assert prompt_key(messages) == hashlib.sha256(canonical.encode()).hexdigest()


@pytest.mark.parametrize("variant, same", [
    ([{"role": "user", "content": "Où est ma carte ?"}], True),
    ([{"role": "user", "content": "Où est ma carte ?", "name": "alice"}], True),
    ([{"role": "user", "content": "Où est ma carte ?", "name": None, "tool_calls": None}], True),
    ([{"role": "user", "content": "Où est ma carte ?  "}], False),
    ([{"role": "system", "content": "Où est ma carte ?"}], False),
    ([{"role": "user", "content": "Où est ma carte ?"}, {"role": "assistant", "content": None}], False),
])
def test_prompt_key_ignores_name_and_extra_keys_only(variant, same):
    base = prompt_key([{"role": "user", "content": "Où est ma carte ?"}])
    assert (prompt_key(variant) == base) is same


def test_missing_and_none_content_hash_alike():
    assert prompt_key([{"role": "assistant", "content": None}]) == prompt_key([{"role": "assistant"}]) \
        == prompt_key([{"role": "assistant", "content": ""}])


# --------------------------------------------------------------------------------------------
# Recorded outputs
# --------------------------------------------------------------------------------------------


@pytest.fixture
def recording(tmp_path) -> Path:
    return write_lines(
        tmp_path / "legacy-2023.jsonl",
        {"example_id": "ex-1", "prompt_sha256": prompt_key(EXAMPLES[0]["messages"]), "output": "About 5 days."},
        {"prompt_sha256": prompt_key(EXAMPLES[1]["messages"]), "output": "Yes, in the app."},
        {"example_id": "ex-3", "error": "content filter triggered"},
        {"messages": [{"role": "user", "content": "Hello?"}], "output": "Hi! How can I help?"},
    )


@pytest.mark.parametrize("ex, expected", [
    (EXAMPLES[0], "About 5 days."),                                   # by id (and its prompt agrees)
    (dict(EXAMPLES[1], example_id="renamed-2"), "Yes, in the app."),  # by prompt: the id is unknown
    ({"example_id": "new", "messages": [{"role": "user", "content": "Hello?", "name": "x"}]},
     "Hi! How can I help?"),                                          # by the prompt of a `messages` line
    ({"example_id": "ex-1", "messages": EXAMPLES[1]["messages"]}, "Yes, in the app."),  # id reused: prompt wins
])
def test_recorded_lookup_by_id_then_prompt(recording, ex, expected):
    provider = RecordedProvider(recording)
    assert provider.model_id == "recorded:legacy-2023.jsonl"
    assert provider.generate(ex) == expected


def test_a_reused_id_with_an_unknown_prompt_is_not_replayed(recording):
    with pytest.raises(ProviderError, match=r"no recorded output for example ex-1 .*for another prompt"):
        RecordedProvider(recording).generate(example("ex-1", "Something else entirely"))


def test_missing_and_recorded_errors_become_error_results(recording):
    unknown = example("ex-9", "Is there a branch near me?")
    results = generate_outputs(RecordedProvider(recording), [EXAMPLES[0], unknown, EXAMPLES[2], EXAMPLES[1]])
    assert [(r.example_id, r.status) for r in results] == [("ex-1", "ok"), ("ex-9", "error"),
                                                         ("ex-3", "error"), ("ex-2", "ok")]
    missing, failed = results[1], results[2]
    key = prompt_key(unknown["messages"])
    assert missing.error == f"no recorded output for example ex-9 (prompt sha256 {key[:12]}) in {recording}"
    assert missing.output is None and missing.attempts == 1
    assert failed.error.endswith("content filter triggered") and f"{recording} line 3" in failed.error
    assert results[0] == OutputResult("ex-1", "ok", "About 5 days.", None, 1, results[0].latency_ms)
    assert all(r.latency_ms is not None and r.latency_ms >= 0 for r in results)


@pytest.mark.parametrize("bad_row, fragment", [
    ('{"example_id": "ex-7", "output": "unterminated', "line 2: not JSON"),
    ('"just a string"', "line 2: expected a JSON object, got str"),
    ({"output": "orphan"}, "line 2, field 'example_id': neither example_id nor prompt_sha256"),
    ({"example_id": "ex-7"}, "line 2, field 'output': missing"),
    ({"example_id": "ex-7", "output": {"text": "hi"}}, "line 2, field 'output': must be a string, got dict"),
    ({"example_id": "ex-7", "output": "a", "error": "b"}, "line 2, field 'error': a line has an output or an error, not both"),
    ({"example_id": 7, "output": "a"}, "line 2, field 'example_id': must be a non-empty string"),
    ({"prompt_sha256": "abc", "output": "a"}, "line 2, field 'prompt_sha256': must be 64 lower-case hex"),
    ({"prompt_sha256": "0" * 64, "messages": [{"role": "user", "content": "x"}], "output": "a"},
     "line 2, field 'prompt_sha256': 000000000000... does not match the line's messages"),
    ({"example_id": "ex-1", "output": "again"}, "line 2, field 'example_id': 'ex-1' is already recorded"),
    ({"prompt_sha256": prompt_key(EXAMPLES[0]["messages"]), "output": "again"},
     "line 2, field 'prompt_sha256': prompt"),
])
def test_bad_recording_lines_name_file_line_and_field(tmp_path, bad_row, fragment):
    path = write_lines(tmp_path / "rec.jsonl",
                       {"example_id": "ex-1", "prompt_sha256": prompt_key(EXAMPLES[0]["messages"]), "output": "ok"},
                       bad_row)
    with pytest.raises(ValueError) as info:
        RecordedProvider(path)
    assert str(info.value).startswith(f"{path} line 2")
    assert fragment in str(info.value)


def test_one_prompt_under_several_ids_is_found_by_id_never_guessed(tmp_path):
    key = prompt_key(EXAMPLES[0]["messages"])
    path = write_lines(tmp_path / "rec.jsonl", {"example_id": "a", "prompt_sha256": key, "output": "first"},
                       {"example_id": "b", "prompt_sha256": key, "output": "second"})
    provider = RecordedProvider(path)
    assert provider.generate(dict(EXAMPLES[0], example_id="b")) == "second"
    with pytest.raises(ProviderError, match="recorded under several other ids"):
        provider.generate(dict(EXAMPLES[0], example_id="c"))


def test_write_recording_round_trips_and_refuses_bad_rows(tmp_path):
    path = write_recording(tmp_path / "recordings" / "v1.jsonl", [
        {"example_id": "ex-1", "output": "About 5 days."},
        {"messages": EXAMPLES[1]["messages"], "output": "Yes, in the app."},
        {"example_id": "ex-3", "prompt_sha256": prompt_key(EXAMPLES[2]["messages"]), "output": None,
         "error": "timeout"},
    ])
    assert json.loads(path.read_text().splitlines()[1]) == {"prompt_sha256": prompt_key(EXAMPLES[1]["messages"]),
                                                           "output": "Yes, in the app."}
    results = generate_outputs(RecordedProvider(path), EXAMPLES)
    assert [r.output for r in results] == ["About 5 days.", "Yes, in the app.", None]
    assert results[2].error.endswith("timeout")

    target = tmp_path / "recordings" / "v2.jsonl"
    with pytest.raises(ValueError, match=r"row 1, field 'example_id': 'ex-1' is already recorded \(row 0\)"):
        write_recording(target, [{"example_id": "ex-1", "output": "a"}, {"example_id": "ex-1", "output": "b"}])
    assert not target.exists()  # nothing written


# --------------------------------------------------------------------------------------------
# generate_outputs with a plain Python provider
# --------------------------------------------------------------------------------------------


class SlowEcho:
    """Answers after a delay that shrinks with the index (so later examples finish first),
    counting the calls in flight."""

    model_id = "echo"

    def __init__(self) -> None:
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()

    def generate(self, ex: dict) -> str:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            index = int(ex["example_id"].split("-")[1])
            time.sleep(0.01 * (10 - index))
            if index == 4:
                raise TimeoutError("upstream took too long")
            return f"echo {ex['messages'][-1]['content']}"
        finally:
            with self._lock:
                self.in_flight -= 1


@pytest.mark.parametrize("max_workers", [1, 3, 8])
def test_order_is_kept_and_the_limit_respected(max_workers):
    examples = [example(f"ex-{i}", f"question {i}") for i in range(10)]
    provider = SlowEcho()
    results = generate_outputs(provider, examples, max_workers=max_workers)
    assert [r.example_id for r in results] == [f"ex-{i}" for i in range(10)]
    assert [r.output for r in results if r.status == "ok"] == [f"echo question {i}" for i in range(10) if i != 4]
    assert results[4] == OutputResult("ex-4", "error", None, "TimeoutError: upstream took too long", 1,
                                      results[4].latency_ms)
    assert provider.max_in_flight <= max_workers
    if max_workers > 1:
        assert provider.max_in_flight > 1  # the calls did overlap


def test_malformed_examples_are_error_results_and_no_workers_is_refused(recording):
    results = generate_outputs(RecordedProvider(recording), [{"example_id": "bare"}, EXAMPLES[0]])
    assert results[0].status == "error" and "has no 'messages' list" in results[0].error
    assert results[1].status == "ok"
    assert generate_outputs(RecordedProvider(recording), []) == []
    with pytest.raises(ValueError, match="max_workers must be >= 1"):
        generate_outputs(RecordedProvider(recording), EXAMPLES, max_workers=0)


# --------------------------------------------------------------------------------------------
# A live endpoint: the local OpenAI-compatible server
# --------------------------------------------------------------------------------------------


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as srv:
        yield srv


def registered(srv: ScriptedServer, **overrides: Any) -> ModelVersion:
    fields: dict[str, Any] = {"name": "support-assistant", "version": "2024-06", "provider": "openai-compatible",
                              "base_url": srv.base_url, "model": "candidate-model"}
    fields.update(overrides)
    return ModelVersion(**fields)


def question_of(body: dict) -> str:
    return body["messages"][-1]["content"]


def test_request_carries_the_messages_and_the_params(server):
    server.script(Reply(content="About 5 days."))
    mv = registered(server, params={"temperature": 0.7, "max_tokens": 128}, api_key_env="CANDIDATE_KEY")
    with provider_for(mv, env={"CANDIDATE_KEY": "secret-value"}) as provider:
        assert isinstance(provider, OpenAIModelProvider)
        assert provider.model_id == f"{server.base_url}|candidate-model" and "secret" not in provider.model_id
        assert provider.generate(EXAMPLES[0]) == "About 5 days."
    sent = server.requests[0]
    assert sent["model"] == "candidate-model"
    assert sent["temperature"] == 0.7 and sent["max_tokens"] == 128
    assert sent["messages"] == [{"role": m["role"], "content": m["content"]} for m in EXAMPLES[0]["messages"]]
    assert "response_format" not in sent


def test_params_left_out_are_left_out_of_the_request(server):
    server.script(Reply(content="Yes."))
    with provider_for(registered(server)) as provider:
        provider.generate(EXAMPLES[1])
    assert "temperature" not in server.requests[0] and "max_tokens" not in server.requests[0]


def test_a_server_error_then_success_is_retried(server):
    # a small retry-after-ms keeps the wait short (the openai client's own backoff starts at 0.5 s)
    server.script(Reply(status=500, body={"error": {"message": "overloaded", "type": "server_error"}},
                        headers={"retry-after-ms": "1"}),
                  Reply(content="About 5 days."))
    with provider_for(registered(server), max_retries=2) as provider:
        [result] = generate_outputs(provider, [EXAMPLES[0]])
    assert result.status == "ok" and result.output == "About 5 days." and result.attempts == 2
    assert len(server.requests) == 2


def test_permanent_failures_are_errors_for_exactly_those_examples(server):
    examples = [example(f"ex-{i}", f"question {i}") for i in range(8)]
    failing = {"question 2", "question 5"}

    def responder(body: dict) -> Reply:
        if question_of(body) in failing:
            return Reply(status=503, body={"error": {"message": "model unavailable", "type": "server_error"}},
                         headers={"retry-after-ms": "1"})
        return Reply(content=f"answer to {question_of(body)}")

    server.responder = responder
    with provider_for(registered(server), max_retries=1) as provider:
        results = generate_outputs(provider, examples, max_workers=3)
    assert [r.status for r in results] == ["error" if i in (2, 5) else "ok" for i in range(8)]
    for i, result in enumerate(results):
        if i in (2, 5):
            assert "503" in result.error and "giving up after 2 attempts" in result.error
            assert result.attempts == 2 and result.output is None
        else:
            assert result.output == f"answer to question {i}" and result.attempts == 1 and result.error is None
    assert len(server.requests) == 6 + 2 * 2


def test_requests_in_flight_never_exceed_max_workers(server):
    server.responder = lambda body: Reply(content=f"answer to {question_of(body)}")
    server.delay = 0.05  # requests overlap, so the limit is exercised
    examples = [example(f"ex-{i}", f"question {i}") for i in range(9)]
    with provider_for(registered(server)) as provider:
        results = generate_outputs(provider, examples, max_workers=3)
    assert [r.output for r in results] == [f"answer to question {i}" for i in range(9)]
    assert 1 < server.max_in_flight <= 3


def test_a_missing_api_key_variable_is_named(server):
    mv = registered(server, api_key_env="CANDIDATE_KEY")
    with pytest.raises(ValueError, match="environment variable CANDIDATE_KEY, which is not set"):
        provider_for(mv, env={"OTHER": "x"})


def test_provider_for_a_recording(recording):
    mv = ModelVersion(name="legacy", version="2023", provider="recorded", recorded_path=str(recording))
    provider = provider_for(mv)
    assert isinstance(provider, RecordedProvider) and provider.generate(EXAMPLES[0]) == "About 5 days."
