"""A small data home for evaluation tests: an eval set and its gold references written straight into
the warehouse (as the IO manager leaves them), recordings of model versions, and registrations.

The set: 150 intent-routing examples (a few rare intents among them) and 250 extraction examples,
plus 20 open questions that nothing scores offline. The baseline answers 90% of routing and
extraction correctly; ``regressed`` answers the same except on the rare intents.
"""

from __future__ import annotations

import json
from datetime import date, datetime, timezone
from pathlib import Path

import duckdb
import polars as pl

from eval_pipeline.defs.labeling.assets import GOLD_REFERENCES
from eval_pipeline.lib.core.paths import DataHome
from eval_pipeline.lib.registry.providers import prompt_key, write_recording
from eval_pipeline.lib.registry.versions import ModelRegistry, ModelVersion
from eval_pipeline.lib.storage.tables import EVAL_SET_SCHEMA, frame

COMMON = ("card_arrival", "card_payment_fee_charged", "exchange_rate", "top_up_failed")
RARE = ("lost_or_stolen_phone", "card_swallowed")  # 5 examples each
NAME = "router"


def _example(eid: str, task: str, text: str, weight: float) -> dict:
    return {"eval_set_version": "v1", "month": date(2026, 1, 1), "month_start": datetime(2026, 1, 1), "example_id": eid,
            "request_id": f"req-{eid}", "conversation_id": f"conv-{eid}", "turn_index": 0,
            "timestamp": datetime(2026, 1, 5, 9),
            "messages": [{"role": "system", "content": f"You handle {task} for a digital bank.", "name": None},
                         {"role": "user", "content": text, "name": None}],
            "context_chunks": [], "production_output": None, "reference": None, "task_type": task, "category": task,
            "slice": json.dumps({"category": task}), "cluster_id": "c0001", "stratum": "c0001",
            "inclusion_probability": 1 / weight, "represents": 1, "weight": weight, "failure_signals": [],
            "added_in": "v1", "removed_in": None, "reason": "initial draw"}


def eval_examples(scale: int = 1) -> tuple[list[dict], dict[str, str]]:
    """(examples, reference by example id); ``scale`` multiplies every count (the benchmark's big set)."""
    examples, refs = [], {}
    intents = [COMMON[i % len(COMMON)] for i in range(140 * scale)] + [RARE[i % 2] for i in range(10 * scale)]
    for i, intent in enumerate(intents):
        eid = f"ex_r{i:04d}"
        examples.append(_example(eid, "intent_routing", f"Message {i} about {intent.replace('_', ' ')}", 2.0))
        refs[eid] = intent
    for i in range(250 * scale):
        eid = f"ex_x{i:04d}"
        examples.append(_example(eid, "extraction", f"Send {100 + i} EUR on 2026-02-{1 + i % 28:02d}", 4.0))
        refs[eid] = json.dumps({"amount": 100 + i, "currency": "EUR", "date": f"2026-02-{1 + i % 28:02d}"})
    for i in range(20 * scale):
        examples.append(_example(f"ex_q{i:04d}", "open_question", f"Explain compound interest, take {i}", 1.0))
    return examples, refs


def write_eval_set(home: DataHome, examples: list[dict], refs: dict[str, str]) -> None:
    df = frame(examples, EVAL_SET_SCHEMA)  # noqa: F841 - read in SQL
    gold = pl.DataFrame([{"example_id": e, "eval_set_version": "v1", "reference": r, "n_annotators": 3,  # noqa: F841
                          "agreement_share": 1.0, "tie": False} for e, r in refs.items()],
                        schema=GOLD_REFERENCES)  # read in SQL
    with duckdb.connect(str(home.warehouse)) as con:
        con.execute("create schema if not exists sampling")
        con.execute("create or replace table sampling.eval_set as select * from df")
        con.execute("create schema if not exists labeling")
        con.execute("create or replace table labeling.gold_references as select * from gold")


def next_version(home: DataHome, examples: list[dict], refs: dict[str, str], *, version: str = "v2",
                 month: date = date(2026, 2, 1), drop: int = 30,
                 add: int = 40) -> tuple[list[dict], list[dict], dict[str, str]]:
    """The eval set's next version, as a month's refresh leaves it: that month's rows appended to
    ``sampling.eval_set`` (the latest month is the current set) with the first ``drop`` extraction
    examples of ``examples`` gone and ``add`` new extraction examples (ids never used before), and
    the new examples' references added to ``labeling.gold_references``. A kept example keeps its id.

    Returns (the new version's examples, every example of both versions in the order ``outputs``
    answers them, the references of all of them)."""
    extraction = [ex for ex in examples if ex["task_type"] == "extraction"]
    gone = {ex["example_id"] for ex in extraction[:drop]}
    start = len(extraction)
    new, new_refs = [], {}
    for i in range(start, start + add):
        eid = f"ex_x{i:04d}"
        new.append(_example(eid, "extraction", f"Send {100 + i} EUR on 2026-03-{1 + i % 28:02d}", 4.0))
        new_refs[eid] = json.dumps({"amount": 100 + i, "currency": "EUR", "date": f"2026-03-{1 + i % 28:02d}"})
    month_start = datetime(month.year, month.month, 1)
    rows = [{**ex, "eval_set_version": version, "month": month, "month_start": month_start}
            for ex in examples if ex["example_id"] not in gone]
    rows += [{**ex, "eval_set_version": version, "month": month, "month_start": month_start, "added_in": version}
             for ex in new]
    df = frame(rows, EVAL_SET_SCHEMA)  # noqa: F841 - read in SQL
    gold = pl.DataFrame([{"example_id": e, "eval_set_version": version, "reference": r, "n_annotators": 3,  # noqa: F841
                          "agreement_share": 1.0, "tie": False} for e, r in new_refs.items()], schema=GOLD_REFERENCES)
    with duckdb.connect(str(home.warehouse)) as con:
        con.execute("insert into sampling.eval_set select * from df")
        con.execute("insert into labeling.gold_references select * from gold")
    return rows, examples + new, {**refs, **new_refs}


def outputs(examples: list[dict], refs: dict[str, str], kind: str) -> dict[str, str]:
    """Outputs of a model version: ``baseline`` (every 10th routing/extraction answer wrong),
    ``same`` (identical to it), ``regressed`` (the baseline, but the rare intents misrouted)."""
    out = {}
    for i, ex in enumerate(examples):
        eid, ref = ex["example_id"], refs.get(ex["example_id"])
        if ref is None:
            out[eid] = "Compound interest is interest on interest."
        elif i % 10 == 9:
            out[eid] = "card_arrival" if ex["task_type"] == "intent_routing" and ref != "card_arrival" else "{}"
            if ex["task_type"] == "intent_routing" and ref == "card_arrival":
                out[eid] = "exchange_rate"
        else:
            out[eid] = ref
        if kind == "regressed" and ref in RARE:
            out[eid] = "card_arrival"
    return out


def record(home: DataHome, examples: list[dict], answers: dict[str, str], name: str) -> Path:
    path = home.recordings / f"{name}.jsonl"
    write_recording(path, [{"example_id": ex["example_id"], "prompt_sha256": prompt_key(ex["messages"]),
                            "output": answers[ex["example_id"]]} for ex in examples])
    return path


def register(home: DataHome, version: str, role: str = "candidate", **provider) -> str:
    mv = ModelVersion(name=NAME, version=version, role=role, registered_at=datetime.now(timezone.utc), **provider)
    ModelRegistry(home.registry).register(mv)
    return mv.key


def evaluation_home(root: Path, scale: int = 1) -> tuple[DataHome, list[dict], dict[str, str]]:
    """A data home with the eval set, its references, and recordings ``baseline``, ``same`` and
    ``regressed`` under ``<home>/registry/recordings`` (not registered yet)."""
    home = DataHome.resolve(root).ensure()
    examples, refs = eval_examples(scale)
    write_eval_set(home, examples, refs)
    for kind in ("baseline", "same", "regressed"):
        record(home, examples, outputs(examples, refs, kind), kind)
    return home, examples, refs


JUDGE_ENV_NAMES = ("EVAL_PIPELINE_JUDGE_BASE_URL", "EVAL_PIPELINE_JUDGE_MODEL", "EVAL_PIPELINE_JUDGE_API_KEY")


def isolated_evaluation_home(root: Path, monkeypatch) -> tuple[DataHome, list[dict], dict[str, str]]:
    """:func:`evaluation_home` with no ``DAGSTER_HOME`` and no judge endpoint from the environment
    (each test sets the judge it wants)."""
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    for name in JUDGE_ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    return evaluation_home(root)
