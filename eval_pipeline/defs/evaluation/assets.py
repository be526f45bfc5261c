"""Evaluation, one dynamic partition per registered model version (``name:version``).

``candidate_outputs`` runs the version on the current eval set (the tier chosen in the run's
config), ``candidate_scores`` scores each output by the scorers that fit its task type, and
``scorecard`` compares it with the baseline and applies the gates of the thresholds file. The
baseline's stored scores may be on an older eval-set version: the scorecard then pairs the
examples both versions hold and says how many. The logic is in ``lib/registry/providers.py``,
``lib/evaluation/runner.py``, ``lib/evaluation/gates.py`` and ``lib/evaluation/report.py``.
"""


import json
from collections import Counter
from datetime import datetime, timezone
from typing import Any, Literal

import dagster as dg
import polars as pl
from dagster_duckdb import DuckDBResource

from eval_pipeline.defs.partitions import model_versions
from eval_pipeline.defs.registry.assets import version_from_row
from eval_pipeline.defs.resources import (EvaluationSettings, JudgeSettings, LabelingSettings, PipelineSettings,
                                          add_missing_columns, stored_columns)
from eval_pipeline.lib.evaluation.gates import build_scorecard, latest_scoring, version_order, with_human_review
from eval_pipeline.lib.evaluation.report import write_scorecard_report
from eval_pipeline.lib.evaluation.review import (apply_verdicts, failures, human_verdicts, read_review_labels, review_counts,
                                      review_rows, write_review_tasks)
from eval_pipeline.lib.evaluation.runner import score_output, select_tier
from eval_pipeline.lib.evaluation.scorers import score_references
from eval_pipeline.lib.labeling.annotation import rubric_for
from eval_pipeline.lib.labeling.rubrics import rubric_version
from eval_pipeline.lib.registry.providers import generate_outputs, provider_for
from eval_pipeline.lib.storage.tables import markdown_table

KINDS = {"polars", "duckdb"}
_META = {"schema": "evaluation", "partition_expr": "model_version"}
_ALL_MONTHS = dg.AssetIn(partition_mapping=dg.AllPartitionMapping())

CANDIDATE_OUTPUTS = pl.Schema({
    "model_version": pl.String, "eval_set_version": pl.String, "tier": pl.String, "example_id": pl.String,
    "task_type": pl.String, "slice": pl.String, "tier_weight": pl.Float64, "status": pl.String,
    "output": pl.String, "error": pl.String, "attempts": pl.Int64, "latency_ms": pl.Float64,
    "provider": pl.String, "generated_at": pl.Datetime("us", "UTC")})
CANDIDATE_SCORES = pl.Schema({
    "model_version": pl.String, "eval_set_version": pl.String, "tier": pl.String, "example_id": pl.String,
    "task_type": pl.String, "slice": pl.String, "tier_weight": pl.Float64, "status": pl.String,
    "passed": pl.Boolean, "scorers": pl.List(pl.String), "scores": pl.String, "justifications": pl.String,
    "reason": pl.String, "reference": pl.String, "output": pl.String,
    # added after the first layout: appended, and added to an existing table (add_missing_columns)
    "rubric_version": pl.String})
SCORECARD = pl.Schema({
    "model_version": pl.String, "baseline": pl.String, "eval_set_version": pl.String, "tier": pl.String,
    "verdict": pl.String, "slice": pl.String, "critical": pl.Boolean, "examples": pl.Int64, "scored": pl.Int64,
    "passed": pl.Int64, "not_scored": pl.Int64, "errors": pl.Int64, "rate": pl.Float64, "low": pl.Float64,
    "high": pl.Float64, "baseline_rate": pl.Float64, "difference": pl.Float64, "difference_low": pl.Float64,
    "difference_high": pl.Float64, "p_value": pl.Float64, "floor": pl.Float64, "max_drop": pl.Float64,
    "status": pl.String, "detail": pl.String, "mde": pl.Float64, "needed_examples": pl.Int64,
    "report_path": pl.String, "created_at": pl.Datetime("us", "UTC"),
    # added after the first layout: appended, and added to an existing table (add_missing_columns)
    "baseline_eval_set_version": pl.String, "shared_examples": pl.Int64, "paired": pl.Int64,
    # the human review of a deep evaluation's failures (null on a continuous run)
    "failures_reviewed": pl.Int64, "failures_confirmed": pl.Int64, "failures_overturned": pl.Int64,
    "failures_awaiting_review": pl.Int64,
    # the whole scorecard as JSON, on the ``overall`` row (null on the slices' rows): what
    # ``evaluate`` and ``review-failures`` print and gate on, so no code reads the report file back
    "card": pl.String})
FAILURE_REVIEW = pl.Schema({
    "model_version": pl.String, "eval_set_version": pl.String, "tier": pl.String, "example_id": pl.String,
    "task_type": pl.String, "rubric": pl.String, "status": pl.String, "reason": pl.String, "output": pl.String,
    "label_studio_tasks": pl.String, "plain_tasks": pl.String, "verdict": pl.String, "reviewers": pl.Int64,
    "majority": pl.String, "note": pl.String, "reviewed_at": pl.Datetime("us", "UTC")})


def current_eval_set(eval_set: pl.DataFrame) -> pl.DataFrame:
    """The latest month's eval-set version out of every month's (what a version is evaluated on)."""
    if eval_set.height == 0:
        return eval_set
    return eval_set.filter(pl.col("month_start") == eval_set["month_start"].max()).sort("example_id")


def _registered(model_registry: pl.DataFrame, key: str):
    rows = model_registry.filter(pl.col("key") == key).to_dicts()
    if not rows:
        raise dg.Failure(f"model version {key!r} is not in the registry; register it with "
                         f"`eval-pipeline register-model --name ... --version ...` first")
    return version_from_row(rows[0])


class OutputsConfig(dg.Config):
    """Which tier of the eval set to run: ``continuous`` (a fixed 100-200 example subset) or ``deep`` (all)."""

    tier: Literal["continuous", "deep"] = "deep"


@dg.asset(group_name="evaluation", kinds=KINDS | {"openai"}, partitions_def=model_versions, metadata=_META,
          ins={"eval_set": _ALL_MONTHS})
def candidate_outputs(context: dg.AssetExecutionContext, config: OutputsConfig, settings: PipelineSettings,
                      evaluation: EvaluationSettings, model_registry: pl.DataFrame,
                      eval_set: pl.DataFrame) -> dg.Output[pl.DataFrame]:
    """The model version's output on every example of the run's tier of the current eval set
    (the redacted conversation up to the turn, system prompt and context included), through its
    provider: an OpenAI-compatible endpoint (concurrency limit, timeouts, the client's retries)
    or a file of recorded outputs. A failure is a row with its error, never a dropped example."""
    key = context.partition_key
    version = _registered(model_registry, key)
    current = current_eval_set(eval_set)
    if current.height == 0:
        raise dg.Failure("there is no eval set yet: run the monthly refresh (`eval-pipeline refresh`) first")
    examples = select_tier(current.to_dicts(), config.tier, size=evaluation.continuous_size)
    provider = provider_for(version, timeout=evaluation.timeout, max_retries=evaluation.max_retries)
    try:
        results = generate_outputs(provider, examples, max_workers=evaluation.max_workers)
    finally:
        getattr(provider, "close", lambda: None)()
    now = datetime.now(timezone.utc)
    rows = [{"model_version": key, "eval_set_version": ex["eval_set_version"], "tier": config.tier,
             "example_id": ex["example_id"], "task_type": ex["task_type"], "slice": ex["slice"],
             "tier_weight": ex["tier_weight"], "status": r.status, "output": r.output, "error": r.error,
             "attempts": r.attempts, "latency_ms": r.latency_ms, "provider": provider.model_id, "generated_at": now}
            for ex, r in zip(examples, results)]
    df = pl.DataFrame(rows, schema=CANDIDATE_OUTPUTS)
    errors = df.filter(pl.col("status") == "error")
    latency = df["latency_ms"].drop_nulls()
    return dg.Output(df, metadata={
        "dagster/row_count": df.height,
        "model_version": key, "tier": config.tier, "provider": provider.model_id,
        "eval_set_version": str(current["eval_set_version"][0]),
        "examples_in_set": current.height,
        "errors": errors.height,
        "latency_ms_p50": float(latency.median()) if latency.len() else 0.0,
        "error_examples": dg.MetadataValue.md(markdown_table(errors.select("example_id", "attempts", "error").head(20),
                                                             max_cell=120)),
    })


@dg.asset(group_name="evaluation", kinds=KINDS, partitions_def=model_versions, metadata=_META,
          ins={"eval_set": _ALL_MONTHS})
def candidate_scores(context: dg.AssetExecutionContext, settings: PipelineSettings, labeling: LabelingSettings,
                     judge: JudgeSettings, warehouse: DuckDBResource, candidate_outputs: pl.DataFrame, eval_set: pl.DataFrame,
                     gold_references: pl.DataFrame) -> dg.Output[pl.DataFrame]:
    """Each output scored by the scorers that fit its task type with the rubric's pass rule:
    exact match (plus token F1, ROUGE-L and BERTScore F1, reported) against the adjudicated
    reference where the task has one correct answer, and the LLM judge's rubric scores when a judge endpoint is
    configured. An example no scorer applies to is ``not_scored`` (never a pass or a fail); a
    provider failure stays an ``error``. Each row records the version of the rubric it was scored
    under (``rubric_version``), so a scorecard never pairs scorings of two versions of a rubric."""
    rubrics = labeling.rubrics()
    examples = {r["example_id"]: r for r in current_eval_set(eval_set).to_dicts()}
    references = {r["example_id"]: r["reference"] for r in gold_references.to_dicts() if r.get("reference")}
    outputs = candidate_outputs.to_dicts()

    def rubric_of(task_type):
        return rubric_for(rubrics, task_type)

    judged: dict[str, Any] = {}
    if judge.configured:
        runner = judge.judge(settings.data_home.cache / "judge")
        todo = [o for o in outputs if o["status"] == "ok" and rubric_of(o["task_type"]) and o["example_id"] in examples]
        items = [(rubric_of(o["task_type"]), examples[o["example_id"]]["messages"],
                  examples[o["example_id"]]["context_chunks"], o["output"] or "") for o in todo]
        judged = dict(zip((o["example_id"] for o in todo), runner.judge_many(items, max_workers=judge.max_workers)))
    reference_of = {eid: references.get(eid) or (examples.get(eid) or {}).get("reference")
                    for eid in (o["example_id"] for o in outputs)}
    # every output's reference metrics at once: BERTScore is one model call for the run, not one per example
    scored = [o for o in outputs if o["status"] != "error"]
    metrics = dict(zip((o["example_id"] for o in scored),
                       score_references([(rubric_of(o["task_type"]), o["output"], reference_of[o["example_id"]])
                                         for o in scored])))
    rows = []
    for o in outputs:
        eid = o["example_id"]
        reference = reference_of[eid]
        score = score_output(o["task_type"], rubric_of(o["task_type"]), o["output"],
                             o["error"] if o["status"] == "error" else None, reference,
                             judged.get(eid), judge_configured=judge.configured, metrics=metrics.get(eid))
        rows.append({**{k: o[k] for k in ("model_version", "eval_set_version", "tier", "example_id", "task_type",
                                          "slice", "tier_weight", "output")},
                     "status": score.status, "passed": score.passed, "scorers": score.scorers,
                     "scores": json.dumps(score.scores, sort_keys=True),
                     "justifications": json.dumps(score.justifications, sort_keys=True),
                     "reason": score.reason, "reference": reference,
                     "rubric_version": rubric_version(rubric) if (rubric := rubric_of(o["task_type"])) else None})
    df = pl.DataFrame(rows, schema=CANDIDATE_SCORES)
    add_missing_columns(warehouse, "evaluation.candidate_scores", CANDIDATE_SCORES)
    by_task = (df.group_by("task_type", "status").len().pivot(on="status", index="task_type", values="len")
               .fill_null(0).sort("task_type")) if df.height else df
    reasons = Counter(r["reason"] for r in rows if r["status"] == "not_scored")
    return dg.Output(df, metadata={
        "dagster/row_count": df.height,
        "by_status": dg.MetadataValue.json(dict(Counter(r["status"] for r in rows))),
        "by_task_type": dg.MetadataValue.md(markdown_table(by_task)),
        "not_scored_because": dg.MetadataValue.json(dict(reasons)),
        "judge": "configured" if judge.configured else "not configured (open-ended task types are not scored)",
    })


@dg.asset(group_name="evaluation", kinds=KINDS, partitions_def=model_versions, metadata=_META,
          ins={"eval_set": _ALL_MONTHS})
def failure_review(context: dg.AssetExecutionContext, settings: PipelineSettings, labeling: LabelingSettings,
                   candidate_scores: pl.DataFrame, eval_set: pl.DataFrame) -> dg.Output[pl.DataFrame]:
    """A deep evaluation's failures (``failed`` and ``error`` examples) sent to people, and their
    verdicts. Writes review tasks per rubric (the eval set's Label Studio config and plain CSV,
    showing the candidate's output, the automatic verdict and ``review_of``) under
    ``<data home>/labels/review/<name>/<version>/tasks/``, and reads the completed files dropped
    into ``.../inbox/``: one row per failure with the reviewers' verdict (``confirmed``,
    ``overturned``, ``awaiting_review``, ``incomplete``, ``no_rubric``). A continuous-tier run
    sends nothing (no rows)."""
    key = context.partition_key
    tier = candidate_scores["tier"][0] if candidate_scores.height else None
    if tier != "deep":
        return dg.Output(pl.DataFrame(schema=FAILURE_REVIEW), metadata={
            "dagster/row_count": 0, "tier": tier or "none",
            "note": "only a deep-tier evaluation sends its failures for review"})
    rubrics = labeling.rubrics()
    failed = failures(candidate_scores.to_dicts())
    folder = settings.data_home.failure_review(key)
    (folder / "inbox").mkdir(parents=True, exist_ok=True)
    examples = {r["example_id"]: r for r in current_eval_set(eval_set).to_dicts()}
    written = {r["example_id"]: r for r in write_review_tasks(failed, examples, rubrics, key, folder / "tasks")}
    batch = read_review_labels(folder / "inbox", failed, rubrics, key)
    if not batch.reconciles:
        raise dg.Failure(f"review labels of {key} do not reconcile: {batch.counts}")
    verdicts = {v["example_id"]: v for v in human_verdicts(failed, batch.labels, rubrics)}
    rows = review_rows(failed, written, verdicts, model_version=key, tier=tier, at=datetime.now(timezone.utc))
    df = pl.DataFrame(rows, schema=FAILURE_REVIEW)
    counts = review_counts(verdicts.values())
    quarantine = pl.DataFrame([{"reason": q["reason"], "message": q["message"]} for q in batch.quarantine],
                              schema={"reason": pl.String, "message": pl.String})
    return dg.Output(df, metadata={
        "dagster/row_count": df.height,
        "tier": tier,
        "counts": dg.MetadataValue.json(counts),
        "labels": dg.MetadataValue.json(batch.counts),
        "quarantined_because": dg.MetadataValue.json(batch.reasons()),
        "quarantine": dg.MetadataValue.md(markdown_table(quarantine.head(50),
                                                         max_cell=400)),
        "tasks": dg.MetadataValue.path(str(folder / "tasks")),
        "inbox": dg.MetadataValue.path(str(folder / "inbox")),
        "overturned": dg.MetadataValue.md(markdown_table(df.filter(pl.col("verdict") == "overturned")
                                                         .select("example_id", "note"), max_cell=120)),
    })


class ScorecardConfig(dg.Config):
    """``baseline``: ``name:version`` to compare with; empty means the registry's latest baseline of
    the same model name (none when the version is that baseline)."""

    baseline: str = ""


def _baseline_key(config: ScorecardConfig, model_registry: pl.DataFrame, key: str) -> str | None:
    if config.baseline:
        _registered(model_registry, config.baseline)
        return None if config.baseline == key else config.baseline
    name = key.split(":", 1)[0]
    baselines = model_registry.filter((pl.col("name") == name) & (pl.col("role") == "baseline")).sort("registered_at")
    if baselines.height == 0:
        return None
    latest = baselines["key"][-1]
    return None if latest == key else latest


def scorecard_paths(settings: PipelineSettings, key: str, tier: str):
    name, version = key.split(":", 1)
    folder = settings.data_home.reports / "scorecards" / name
    return folder / f"{version}.{tier}.html", folder / f"{version}.{tier}.json"


def baseline_scores(warehouse: DuckDBResource, baseline: str) -> tuple[str | None, list[dict], list[str]]:
    """The baseline's stored scores: (eval-set version, rows of ``example_id``, ``status`` and
    ``rubric_version`` (None in a table of an older layout), every version its stored rows are on). Each run replaces a model version's rows of
    ``candidate_scores`` (the table is partitioned by model version), so they are one scoring; if
    rows of another version are there all the same (a table written otherwise), only the latest
    version's are used, never a mix of two scorings."""
    stored = stored_columns(warehouse, "evaluation.candidate_scores",
                            ("example_id", "status", "eval_set_version", "rubric_version"), "model_version = ?", [baseline])
    if not stored:
        return None, [], []
    versions = sorted({r["eval_set_version"] for r in stored}, key=version_order)
    version, rows = latest_scoring(stored)
    return version, [{k: r[k] for k in ("example_id", "status", "rubric_version")} for r in rows], versions


def same_rubric_versions(candidate: pl.DataFrame, base_rows: list[dict]) -> tuple[list[dict], list[str]]:
    """The baseline rows that can be paired with the candidate's: an example both scored under
    different versions of its rubric (the rubric changed between the two evaluations) is left out
    of the pairing, never compared across versions. Returns (kept rows as ``example_id`` and
    ``status``, the example ids left out). A version unknown on either side (a row stored before
    versions were recorded) is paired as before."""
    mine = dict(zip(candidate["example_id"], candidate["rubric_version"])) if "rubric_version" in candidate.columns else {}
    kept, left_out = [], []
    for r in base_rows:
        theirs, ours = r.get("rubric_version"), mine.get(r["example_id"])
        if theirs and ours and theirs != ours:
            left_out.append(r["example_id"])
        else:
            kept.append({"example_id": r["example_id"], "status": r["status"]})
    return kept, left_out


def judge_reliability(warehouse: DuckDBResource) -> dict[str, Any] | None:
    """The latest month's rows of ``labeling.judge_bias_probes`` and ``labeling.judge_human_gap``
    (None when neither table exists or both are empty: no probe has run)."""
    out: dict[str, Any] = {"month": None, "probes": [], "observed": []}
    with warehouse.get_connection() as con:
        for key, table in (("probes", "judge_bias_probes"), ("observed", "judge_human_gap")):
            exists = con.execute("select count(*) from information_schema.tables "
                                 "where table_schema = 'labeling' and table_name = ?", [table]).fetchone()[0]
            if not exists:
                continue
            rows = con.execute(f"select * from labeling.{table} where month_start = "
                               f"(select max(month_start) from labeling.{table})").pl()
            out[key] = [{k: v for k, v in r.items() if k != "month_start"} for r in rows.to_dicts()]
            if rows.height:
                out["month"] = f"{rows['month_start'][0]:%Y-%m}"
    return out if out["probes"] or out["observed"] else None


@dg.asset(group_name="evaluation", kinds=KINDS | {"html"}, partitions_def=model_versions, metadata=_META)
def scorecard(context: dg.AssetExecutionContext, config: ScorecardConfig, settings: PipelineSettings,
              evaluation: EvaluationSettings, labeling: LabelingSettings, warehouse: DuckDBResource,
              model_registry: pl.DataFrame, candidate_scores: pl.DataFrame,
              failure_review: pl.DataFrame) -> dg.Output[pl.DataFrame]:
    """The verdict on the model version: overall and per-slice pass rates with Wilson intervals,
    the traffic-weighted pass rate, the paired comparison with the baseline on the same examples
    (difference with its interval, McNemar p), the gates of the thresholds file (floors, maximum
    drops, critical slices) and the worst slice; pass, fail or inconclusive, with the reasons, the
    minimum detectable effect and the examples needed where the set is too small to tell. Written
    as a self-contained HTML report (chart of slice pass rates with intervals for both versions).

    The baseline's scores are those stored for it, which may be on an older eval-set version
    (the registry sensor does not re-score a baseline): the comparison then pairs the examples the
    two runs share, and the card, the report, the table and this asset's metadata state both
    versions and how many examples are shared.

    The human verdicts of ``failure_review`` take precedence over the automatic status: an
    overturned failure counts as passed everywhere, the paired comparison with the baseline
    included (the baseline keeps its automatic statuses); the card counts the failures reviewed,
    confirmed, overturned and awaiting review."""
    key = context.partition_key
    thresholds = evaluation.load_thresholds()
    baseline = _baseline_key(config, model_registry, key)
    base_rows, base_version = None, None
    if baseline:
        base_version, base_rows, stored_versions = baseline_scores(warehouse, baseline)
        if not base_rows:
            context.log.warning(f"baseline {baseline} has no scores yet: evaluate it first; its drop gates are "
                                "inconclusive")
        elif len(stored_versions) > 1:
            context.log.warning(f"baseline {baseline} has stored scores on eval-set versions "
                                f"{', '.join(map(str, stored_versions))}: only those on {base_version} are used")
    other_rubric: list[str] = []
    if base_rows:
        base_rows, other_rubric = same_rubric_versions(candidate_scores, base_rows)
        if other_rubric:
            context.log.warning(f"{len(other_rubric)} examples were scored for baseline {baseline} under another "
                                "version of their rubric: left out of the paired comparison (re-evaluate the "
                                "baseline to pair them)")
    rows = candidate_scores.select("example_id", "slice", "status", "task_type", "scorers",
                                   pl.col("tier_weight").alias("weight")).to_dicts()
    rubrics = labeling.rubrics()
    for r in rows:  # the rubric the judge scored the example with, for the judge-reliability warnings
        judged = any(str(s).startswith("judge:") for s in r.pop("scorers") or [])
        rubric = rubric_for(rubrics, r["task_type"]) if judged else None
        r["rubric"] = rubric.name if rubric else None
    reliability = judge_reliability(warehouse)
    if reliability:  # a flagged criterion warns a gate only where it decides the pass
        reliability["required"] = {r.name: [c.id for c in r.criteria if c.required] for r in rubrics.values()}
    verdicts = failure_review.filter(pl.col("model_version") == key).to_dicts()
    rows = apply_verdicts(rows, verdicts)
    tier = candidate_scores["tier"][0] if candidate_scores.height else "deep"
    version = candidate_scores["eval_set_version"][0] if candidate_scores.height else None
    now = datetime.now(timezone.utc)
    card = build_scorecard(rows, base_rows, thresholds, model=key, baseline_model=baseline, eval_set_version=version,
                           baseline_eval_set_version=base_version, tier=tier,
                           created_at=now.strftime("%Y-%m-%dT%H:%M:%SZ"), judge_reliability=reliability)
    review = review_counts(verdicts) if tier == "deep" else None
    with_human_review(card, review, [{"example_id": v["example_id"], "note": v["note"]}
                                     for v in verdicts if v["verdict"] == "overturned"])
    if other_rubric:
        card["reasons"].append(f"{len(other_rubric)} examples not paired with the baseline: it scored them under "
                               "another version of their rubric (re-evaluate the baseline to pair them)")
    card["rubric_version_unpaired"] = sorted(other_rubric)
    comparison = card["comparison"]
    html_path, json_path = scorecard_paths(settings, key, tier)
    write_scorecard_report(card, html_path)
    card_json = json.dumps(card, indent=1)
    json_path.write_text(card_json, encoding="utf-8")  # for people; code reads the table's ``card``
    table = [{**{k: s[k] for k in ("slice", "critical", "examples", "scored", "passed", "not_scored", "errors",
                                    "rate", "low", "high", "floor", "max_drop", "status", "detail", "mde",
                                    "needed_examples", "shared_examples")},
              "model_version": key, "baseline": baseline, "eval_set_version": version, "tier": tier,
              "verdict": card["verdict"], "baseline_rate": (s["baseline"] or {}).get("rate"),
              "difference": (s["paired"] or {}).get("difference"), "difference_low": (s["paired"] or {}).get("low"),
              "difference_high": (s["paired"] or {}).get("high"), "p_value": (s["paired"] or {}).get("p_value"),
              "baseline_eval_set_version": card["baseline_eval_set_version"], "paired": (s["paired"] or {}).get("n"),
              "report_path": str(html_path), "created_at": now,
              "card": card_json if s is card["overall"] else None,
              **({"failures_reviewed": review["reviewed"], "failures_confirmed": review["confirmed"],
                  "failures_overturned": review["overturned"], "failures_awaiting_review": review["awaiting_review"]}
                 if review else {})}
             for s in [card["overall"], *card["slices"]]]
    df = pl.DataFrame(table, schema=SCORECARD)
    add_missing_columns(warehouse, "evaluation.scorecard", SCORECARD)
    view = df.select("slice", "critical", "scored", "paired", "rate", "low", "high", "baseline_rate", "difference",
                     "p_value", "status").with_columns(pl.col(pl.Float64).round(3))
    weighted = card["weighted"] or {}
    return dg.Output(df, metadata={
        "dagster/row_count": df.height,
        "verdict": card["verdict"],
        "reasons": dg.MetadataValue.md("\n".join(f"- {r}" for r in card["reasons"])),
        "baseline": baseline or "none",
        "eval_set_version": version or "none",
        "baseline_eval_set_version": card["baseline_eval_set_version"] or "none",
        "comparison": comparison["summary"] if comparison else "no baseline: floors only",
        "shared_examples": comparison["shared_examples"] if comparison else 0,
        "unpaired_other_rubric_version": len(other_rubric),
        "tier": tier,
        "worst_slice": card["worst_slice"] or "none",
        "pass_rate": card["overall"]["rate"] if card["overall"]["rate"] is not None else float("nan"),
        "weighted_pass_rate": weighted.get("estimate", float("nan")),
        "minimum_detectable_effect": card["overall"]["mde"] if card["overall"]["mde"] is not None else float("nan"),
        "counts": dg.MetadataValue.json(card["counts"]),
        "human_review": dg.MetadataValue.json(review or {"note": "continuous tier: no failures sent for review"}),
        "slices": dg.MetadataValue.md(markdown_table(view, max_cell=40)),
        "report": dg.MetadataValue.path(str(html_path)),
        "judge_reliability_warnings": dg.MetadataValue.json(card["warnings"]),
    })


evaluation_job = dg.define_asset_job(
    "evaluation_job", partitions_def=model_versions,
    selection=dg.AssetSelection.assets("model_registry", "candidate_outputs", "candidate_scores", "failure_review",
                                       "scorecard"),
)
