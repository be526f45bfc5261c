"""API keys stay in the environment: after an evaluation that called a model endpoint and the judge
(some calls answered with 401 and 500 errors) and a tick of every sensor, neither key's value is
in any file of the data home or of the Dagster instance, nor in what the command printed."""

from __future__ import annotations

import json
import re
import secrets

import dagster as dg
import duckdb
from evaluation_fixtures import evaluation_home, register
from openai_server import Reply, ScriptedServer

from eval_pipeline.cli import main
from eval_pipeline.definitions import build_definitions
from eval_pipeline.runs import instance_for


def _duckdb_text(path) -> str:
    """Every value of every table of a DuckDB file as text (its pages may hold strings compressed)."""
    with duckdb.connect(str(path), read_only=True) as con:
        tables = con.execute("select table_schema, table_name from information_schema.tables").fetchall()
        return "\n".join(str(con.execute(f'select * from "{s}"."{t}"').fetchall()) for s, t in tables)


def _parquet_text(path) -> str:
    with duckdb.connect() as con:
        return str(con.execute("select * from read_parquet(?)", [str(path)]).fetchall())


def files_holding(root, values: list[str]) -> list[str]:
    """The files under ``root`` whose bytes, or whose decoded rows (DuckDB, Parquet), hold a value."""
    found = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        texts = [data]
        if path.suffix == ".duckdb":
            texts.append(_duckdb_text(path).encode())
        elif path.suffix == ".parquet":
            texts.append(_parquet_text(path).encode())
        if any(v.encode() in t for v in values for t in texts):
            found.append(str(path))
    return found


def test_api_keys_reach_no_file_and_no_message(tmp_path, monkeypatch, capsys, caplog):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    judge_key, model_key = f"judge-{secrets.token_hex(16)}", f"model-{secrets.token_hex(16)}"
    home, examples, refs = evaluation_home(tmp_path / "home")
    by_text = {ex["messages"][-1]["content"]: refs.get(ex["example_id"], "ok") for ex in examples}
    unauthorized = {ex["messages"][-1]["content"] for ex in examples[:2]}
    broken = {ex["messages"][-1]["content"] for ex in examples[2:4]}

    def respond(body: dict) -> Reply:
        if body["model"] == "judge-model":
            if "take 1\n</turn>" in body["messages"][-1]["content"]:  # one judge call fails
                return Reply(status=500, body={"error": {"message": f"judge overloaded (key {judge_key})",
                                                         "type": "server_error"}})
            schema = body["response_format"]["json_schema"]["schema"]
            return Reply(content=json.dumps({c: {"score": spec["properties"]["score"]["enum"][-1], "justification": "ok"}
                                             for c, spec in schema["properties"].items()}))
        text = body["messages"][-1]["content"]
        if text in unauthorized:
            return Reply(status=401, body={"error": {"message": f"Incorrect API key provided: {model_key}", "type": "invalid_request_error",
                                                     "code": "invalid_api_key"}})
        if text in broken:
            return Reply(status=500, body={"error": {"message": "upstream failed", "type": "server_error"}})
        return Reply(content=by_text.get(text, "ok"))

    register(home, "1", "baseline", provider="recorded", recorded_path=str(home.recordings / "baseline.jsonl"))
    with ScriptedServer() as server:
        server.responder = respond
        monkeypatch.setenv("ROUTER_API_KEY", model_key)
        monkeypatch.setenv("EVAL_PIPELINE_JUDGE_BASE_URL", server.base_url)
        monkeypatch.setenv("EVAL_PIPELINE_JUDGE_MODEL", "judge-model")
        monkeypatch.setenv("EVAL_PIPELINE_JUDGE_API_KEY", judge_key)
        assert main(["register-model", "--home", str(home.root), "--name", "router", "--version", "4",
                     "--provider", "openai-compatible", "--base-url", server.base_url, "--model", "router-4",
                     "--api-key-env", "ROUTER_API_KEY"]) == 0
        code = main(["evaluate", "--home", str(home.root), "--model", "router:4"])
        # the UI's sensors, one tick each, on the data home's instance
        defs = build_definitions(home)
        instance = instance_for(home)
        for sensor in defs.sensors:
            sensor(dg.build_sensor_context(instance=instance, resources=defs.resources))
        models = {r["model"] for r in server.requests}
    assert code == 2  # errors make the verdict inconclusive
    assert models == {"router-4", "judge-model"}  # both endpoints were called, with their keys
    rows = duckdb.connect(str(home.warehouse), read_only=True).execute(
        "select reason from evaluation.candidate_scores where model_version = 'router:4' and status = 'error'").fetchall()
    assert len(rows) >= 4 and any(re.search("401|Incorrect API key", r or "") for (r,) in rows)

    keys = [judge_key, model_key]
    assert files_holding(tmp_path, keys) == []
    printed = capsys.readouterr()
    assert not any(k in printed.out + printed.err + caplog.text for k in keys)
