"""Logs that carry no task type at all, through the real pipeline: ingest, redaction, embeddings,
clusters, the eval set, annotation tasks and judge labels, then a baseline and a candidate model
version evaluated with the LLM judge (a local OpenAI-compatible server, the real ``openai``
client) and gated by the packaged thresholds, which name no category.

Nothing in these logs matches a rubric's ``applies_to``: every example goes through the packaged
``generic`` rubric (the default one), is sliced by its cluster, and the verdict is decided.
"""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone

import duckdb
import pytest
from openai_server import Reply, ScriptedServer

from eval_pipeline.lib.core.paths import DataHome
from eval_pipeline.lib.labeling.rubrics import load_rubrics
from eval_pipeline.lib.registry.providers import prompt_key, write_recording
from eval_pipeline.lib.registry.versions import ModelRegistry, ModelVersion

DAYS = (date(2026, 3, 2), date(2026, 3, 3), date(2026, 3, 4))
NAME = "garden-helper"
REFUSAL = "Sorry, I cannot help with that."

# Two kinds of traffic of an app nobody wrote a rubric for: plant care and pest questions.
PLANTS = ["tomatoes", "basil", "roses", "lavender", "orchids", "strawberries", "blueberries", "ferns", "cacti",
          "hydrangeas", "peppers", "cucumbers", "mint", "rosemary", "tulips", "sunflowers", "lemon trees",
          "courgettes", "lettuce", "carrots"]
CARE = ["How often should I water my {p} in a hot summer?", "Which soil mix do {p} grow best in?",
        "When is the right month to prune {p}?", "How much direct sun do {p} need each day?",
        "Can I grow {p} in a pot on a north-facing balcony?"]
PESTS = ["Small green aphids are all over my {p}; how do I get rid of them without chemicals?",
         "The leaves of my {p} have white powdery spots. Is it mildew and what do I do?",
         "Slugs ate half of my {p} overnight. What stops them?",
         "There are tiny black flies in the compost around my {p}. Are they harmful?",
         "My {p} have yellow leaves with brown edges after the frost; can they recover?"]


def _records() -> list[dict]:
    """20 records a day over three days, half plant care, half pests; no ``task_type`` key."""
    out = []
    for d, day in enumerate(DAYS):
        for i in range(20):
            n = d * 20 + i
            pest = i % 2 == 1
            plant = PLANTS[(n * 7) % len(PLANTS)]
            question = (PESTS if pest else CARE)[(n // 2) % 5].format(p=plant)
            system = ("You are the pest-control adviser of a gardening app." if pest
                      else "You are the plant-care adviser of a gardening app.")
            answer = (f"For {plant}: remove the affected leaves, rinse the plant and check it again in three days."
                      if pest else f"For {plant}: keep the soil evenly moist and give them a sunny, sheltered spot.")
            out.append({
                "request_id": f"garden-{n:03d}",
                "timestamp": (datetime(day.year, day.month, day.day, 8, tzinfo=timezone.utc)
                              + timedelta(minutes=17 * i)).isoformat(),
                "messages": [{"role": "system", "content": system}, {"role": "user", "content": question}],
                "completion": answer,
                "model": NAME,
                "model_version": "1",
                "latency_ms": 300.0 + n,
                "feedback": {"thumbs": "down"} if n % 9 == 0 else {},
            })
    return out


def _judge(body: dict) -> Reply:
    """Top level on every criterion, except for a refusal, which gets level 0 everywhere."""
    schema = body["response_format"]["json_schema"]["schema"]
    bad = REFUSAL in body["messages"][-1]["content"]
    answer = {c: {"score": spec["properties"]["score"]["enum"][0 if bad else -1], "justification": f"{c}: checked"}
              for c, spec in schema["properties"].items()}
    return Reply(content=json.dumps(answer))


def _rows(home: DataHome, sql: str, *params) -> list[tuple]:
    with duckdb.connect(str(home.warehouse), read_only=True) as con:
        return con.execute(sql, list(params)).fetchall()


def _register(home: DataHome, version: str, role: str, outputs: dict[str, str], examples: list[dict]) -> str:
    path = home.recordings / f"{version}.jsonl"
    write_recording(path, [{"example_id": ex["example_id"], "prompt_sha256": prompt_key(ex["messages"]),
                            "output": outputs[ex["example_id"]]} for ex in examples])
    mv = ModelVersion(name=NAME, version=version, role=role, registered_at=datetime.now(timezone.utc),
                      provider="recorded", recorded_path=str(path))
    ModelRegistry(home.registry).register(mv)
    return mv.key


@pytest.fixture
def home(tmp_path, monkeypatch):
    from eval_pipeline.defs.executors import DASK_ADDRESS_ENV, EXECUTOR_ENV
    from eval_pipeline.defs.resources import JUDGE_ENV

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "unused"))  # the runs point it at the data home
    monkeypatch.setenv(EXECUTOR_ENV, "in_process")
    monkeypatch.delenv(DASK_ADDRESS_ENV, raising=False)
    monkeypatch.delenv("EVAL_PIPELINE_STORAGE", raising=False)
    for name in JUDGE_ENV:
        monkeypatch.delenv(name, raising=False)
    data_home = DataHome.resolve(tmp_path / "home").ensure()
    folder = data_home.landing / "garden"
    folder.mkdir(parents=True)
    by_day: dict[str, list[str]] = {}
    for record in _records():
        assert "task_type" not in record
        by_day.setdefault(record["timestamp"][:10], []).append(json.dumps(record))
    for day, lines in by_day.items():
        (folder / f"{day}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return data_home


def test_logs_without_task_type_are_judged_by_the_generic_rubric_and_gated(home, monkeypatch):
    from eval_pipeline.defs.resources import SamplingSettings
    from eval_pipeline.runs import evaluate_model, refresh_month, run_labeling

    generic = load_rubrics()["generic"]
    criteria = {c.id for c in generic.criteria}
    said: list[str] = []
    with ScriptedServer() as judge:
        judge.responder = _judge
        monkeypatch.setenv("EVAL_PIPELINE_JUDGE_BASE_URL", judge.base_url)
        monkeypatch.setenv("EVAL_PIPELINE_JUDGE_MODEL", "judge-model")

        # ingest -> redaction -> embeddings -> clusters -> eval set -> annotation tasks, judge labels
        result = refresh_month(home, "2026-03", log=said.append, workers=1,
                               resources={"sampling": SamplingSettings(target_size=40)})
        assert result.success, (result.failed, said)
        assert run_labeling(home)  # human labels (none yet), agreement, gold labels

        examples = [dict(zip(("example_id", "task_type", "category", "slice", "messages", "production_output"), r))
                    for r in _rows(home, "select example_id, task_type, category, slice, messages, production_output "
                                         "from sampling.eval_set")]
        assert len(examples) >= 12  # near-duplicate questions are drawn once (dedup_cosine)
        # no task type, yet every example has a usable category: its cluster
        assert all(ex["task_type"] is None for ex in examples)
        categories = {ex["category"] for ex in examples}
        assert all(c and c.startswith("cluster:") for c in categories)
        assert all(json.loads(ex["slice"])["category"] == ex["category"] for ex in examples)

        # annotation tasks: every example, for the generic rubric, in both task formats
        tasks = _rows(home, "select rubric, count(*) from labeling.annotation_tasks group by 1")
        assert tasks == [("generic", len(examples))]
        outbox = home.labels_outbox / "v1"
        config = (outbox / "label_studio" / "generic.config.xml").read_text(encoding="utf-8")
        assert all(f'name="{c}"' in config for c in criteria)
        assert len(json.loads((outbox / "label_studio" / "generic.tasks.json").read_text())) == len(examples)
        assert (outbox / "plain" / "generic.tasks.csv").is_file()

        # judge labels of the production outputs: the generic rubric's criteria, every one scored
        labels = _rows(home, "select rubric, criterion, status, count(*) from labeling.judge_labels group by all")
        assert {(r, c, s) for r, c, s, _ in labels} == {("generic", c, "ok") for c in criteria}
        assert all(n == len(examples) for *_, n in labels)
        assert all("Rubric: generic" in r["messages"][0]["content"] for r in judge.requests)

        # a baseline, and a candidate that refuses every pest question
        def answers(regressed: bool) -> dict[str, str]:
            return {ex["example_id"]: REFUSAL if regressed and "pest-control" in ex["messages"][0]["content"]
                    else ex["production_output"] for ex in examples}

        _register(home, "1", "baseline", answers(False), examples)
        candidate = _register(home, "2", "candidate", answers(True), examples)
        outcome = evaluate_model(home, candidate, log=said.append)
        assert outcome.error is None, outcome.error

    card = outcome.scorecard
    # the verdict is decided by the overall gate of the packaged thresholds
    assert card["verdict"] == "fail", card["reasons"]
    assert card["overall"]["status"] == "fail" and card["overall"]["paired"]["baseline_only"] > 0
    assert any(r.startswith("overall fail") for r in card["reasons"])
    # every example scored by the judge with the generic rubric, none "not scored"
    scores = _rows(home, "select model_version, status, scorers, scores from evaluation.candidate_scores")
    assert {m for m, *_ in scores} == {f"{NAME}:1", candidate}
    assert len(scores) == 2 * len(examples)
    assert all(status in ("passed", "failed") for _, status, _, _ in scores)
    assert all(scorers == [f"judge:{judge.base_url}|judge-model"] for _, _, scorers, _ in scores)
    assert all(set(json.loads(s)) == {f"judge.{c}" for c in criteria} for *_, s in scores)
    assert card["counts"]["not_scored"] == 0 and card["counts"]["scored"] == len(examples)
    # a gate for every slice found: the default slice gate, on categories nobody listed
    assert {s["slice"] for s in card["slices"]} == {f"category={c}" for c in categories}
    assert all(s["max_drop"] == 0.10 and not s["critical"] and s["status"] != "not_scored" for s in card["slices"])
    # the failures go to human review with the generic rubric (never "no rubric")
    review = _rows(home, "select rubric, verdict, count(*) from evaluation.failure_review "
                         "where model_version = ? group by all", candidate)
    assert review and {r for r, _, _ in review} == {"generic"}
    assert all(v != "no_rubric" for _, v, _ in review)
