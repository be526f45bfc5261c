"""Labeling: annotation tasks out, human labels in, LLM-judge labels, agreement, gold labels.

The logic is in ``lib/labeling/annotation.py`` (Label Studio and plain round trip), ``lib/labeling/judge.py``,
``lib/labeling/agreement.py`` and ``lib/evaluation/scorers.py``; these assets read inputs, call it and store frames.
"""

import json
from collections import Counter
from datetime import datetime
from typing import Any, Iterable

import dagster as dg
import polars as pl
from dagster_duckdb import DuckDBResource

from eval_pipeline.defs.partitions import monthly_partitions
from eval_pipeline.defs.resources import (JudgeSettings, LabelingSettings, PipelineSettings, add_missing_columns,
                                          stored_columns)
from eval_pipeline.lib.evaluation.scorers import REFERENCE_SCORERS, score_references
from eval_pipeline.lib.labeling.agreement import criterion_agreement, example_disagreements, gold_labels as majority_labels
from eval_pipeline.lib.labeling.agreement import adjudicated_references, current_version_labels, judge_calibration, review_queue
from eval_pipeline.lib.labeling.annotation import (read_annotation_folder, relabel_sample, rubric_for,
                                                   write_rubric_tasks)
from eval_pipeline.lib.labeling.judge_probes import (DEFAULT_SAMPLE, DEFAULT_THRESHOLD, judge_human_pairs, label_values,
                                            observed_bias, probe_rows, run_probes, sample_examples)
from eval_pipeline.lib.labeling.rubrics import rubric_version
from eval_pipeline.lib.storage.tables import markdown_table

KINDS = {"polars", "duckdb"}
_LABELS = {"schema": "labeling"}


def _current_versions(rubrics) -> dict[str, str]:
    return {r.name: rubric_version(r) for r in rubrics.values()}


def _frame(rows: Iterable[dict[str, Any]], columns: dict[str, pl.DataType]) -> pl.DataFrame:
    """Rows to a typed frame; dict and list-of-dict values become JSON text."""
    def cell(value: Any, dtype: pl.DataType) -> Any:
        if dtype == pl.String and isinstance(value, (dict, list)):
            return json.dumps(value, sort_keys=True, default=str)
        return value

    return pl.DataFrame([{c: cell(r.get(c), t) for c, t in columns.items()} for r in rows], schema=columns)


# --------------------------------------------------------------------------------------------
# Tasks out, judge labels (monthly, per eval-set version)
# --------------------------------------------------------------------------------------------

ANNOTATION_TASKS = {"month_start": pl.Datetime("us"), "eval_set_version": pl.String, "example_id": pl.String,
                    "task_type": pl.String, "rubric": pl.String, "label_studio_tasks": pl.String, "plain_tasks": pl.String,
                    # added after the first layout: last, and added to an existing table (add_missing_columns).
                    # batch: "tasks" (the month's set) or "relabel" (a sample re-labelled under a changed rubric)
                    "rubric_version": pl.String, "batch": pl.String}


@dg.asset(group_name="labeling", kinds=KINDS | {"labelstudio"}, partitions_def=monthly_partitions,
          metadata={**_LABELS, "partition_expr": "month_start"})
def annotation_tasks(context: dg.AssetExecutionContext, settings: PipelineSettings, labeling: LabelingSettings,
                     warehouse: DuckDBResource, eval_set: pl.DataFrame) -> dg.Output[pl.DataFrame]:
    """The month's eval-set version as annotation tasks, per rubric: a Label Studio labeling config
    (generated from the rubric) and tasks in its import format, plus the same tasks as plain CSV
    for teams without Label Studio, under ``<data home>/labels/outbox/<version>/``. Tasks of
    rubrics with one correct answer ask the annotator to confirm or correct the reference. Every
    task names the rubric version it was written under.

    When a rubric changed since its human labels were made (stored labels of another version, or
    of none), a re-labelling batch goes out too: a seeded sample of ``labeling.relabel_size`` of
    the month's already-labelled examples under the new version, in
    ``.../relabel/<rubric>@<version>/``; the judge re-labels under the new version by itself."""
    rubrics = labeling.rubrics()
    examples = eval_set.to_dicts()
    version = examples[0]["eval_set_version"] if examples else None
    rows, per_rubric, unrubricked, relabel = [], {}, Counter(), {}
    if version:
        folder = settings.data_home.labels_outbox / version
        by_rubric: dict[str, list[dict]] = {}
        for ex in examples:
            rubric = rubric_for(rubrics, ex["task_type"])
            if rubric is None:
                unrubricked[ex["task_type"]] += 1
                continue
            by_rubric.setdefault(rubric.name, []).append(ex)
        for name, group in sorted(by_rubric.items()):
            rubric = rubrics[name]
            ls_path, plain_path = write_rubric_tasks(group, rubric, folder / "label_studio", folder / "plain")
            per_rubric[name] = len(group)
            rows += [{"month_start": ex["month_start"], "eval_set_version": version, "example_id": ex["example_id"],
                      "task_type": ex["task_type"], "rubric": name, "label_studio_tasks": str(ls_path),
                      "plain_tasks": str(plain_path), "rubric_version": rubric_version(rubric), "batch": "tasks"}
                     for ex in group]
        stored = stored_columns(warehouse, "labeling.human_labels", ("example_id", "rubric", "rubric_version"))
        month = {ex["example_id"]: ex for ex in examples}
        for name, rubric in sorted(rubrics.items()):
            current = rubric_version(rubric)
            picked, info = relabel_sample(stored, rubric, month, labeling.relabel_size)
            if not info["older_labels"]:
                continue
            relabel[name] = {"version": current, **info}
            if not picked:
                continue
            group = [month[eid] for eid in picked]
            out = folder / "relabel" / f"{name}@{current}"
            ls_path, plain_path = write_rubric_tasks(group, rubric, out, out)
            relabel[name]["folder"] = str(out)
            rows += [{"month_start": ex["month_start"], "eval_set_version": version, "example_id": ex["example_id"],
                      "task_type": ex["task_type"], "rubric": name, "label_studio_tasks": str(ls_path),
                      "plain_tasks": str(plain_path), "rubric_version": current, "batch": "relabel"} for ex in group]
    df = _frame(rows, ANNOTATION_TASKS)
    add_missing_columns(warehouse, "labeling.annotation_tasks", pl.Schema(ANNOTATION_TASKS))  # an older home's table
    return dg.Output(df, metadata={
        "dagster/row_count": df.height,
        "eval_set_version": version or "none",
        "tasks_per_rubric": dg.MetadataValue.json(per_rubric),
        "rubric_versions": dg.MetadataValue.json({name: rubric_version(r) for name, r in sorted(rubrics.items())}),
        "relabel": dg.MetadataValue.json(relabel),
        "task_types_without_rubric": dg.MetadataValue.json(dict(unrubricked)),
        "outbox": dg.MetadataValue.path(str(settings.data_home.labels_outbox / (version or ""))),
        "how_to": dg.MetadataValue.md(
            "Label Studio: create a project with the `<rubric>.config.xml` labeling config, import "
            "`<rubric>.tasks.json`, annotate, export as JSON into `<data home>/labels/inbox/`. Without Label "
            "Studio: fill `score` (and `annotator`, `reference` where asked) in `plain/<rubric>.tasks.csv` and "
            "drop it in the inbox. `labels_sensor` picks new files up."),
    })


JUDGE_LABELS = {"month_start": pl.Datetime("us"), "eval_set_version": pl.String, "example_id": pl.String,
                "task_type": pl.String, "rubric": pl.String, "criterion": pl.String, "score": pl.Int64,
                "justification": pl.String, "status": pl.String, "error": pl.String, "judge_model": pl.String,
                "cached": pl.Boolean,
                # added after the first layout: last, and added to an existing table (add_missing_columns)
                "rubric_version": pl.String}


@dg.asset(group_name="labeling", kinds=KINDS | {"openai"}, partitions_def=monthly_partitions,
          metadata={**_LABELS, "partition_expr": "month_start"})
def judge_labels(context: dg.AssetExecutionContext, settings: PipelineSettings, labeling: LabelingSettings,
                 judge: JudgeSettings, warehouse: DuckDBResource, eval_set: pl.DataFrame) -> dg.Output[pl.DataFrame]:
    """Scores of an LLM judge per example and criterion, with a justification each: the rubric in
    the system prompt, the conversation, context and production output in the user message,
    structured JSON out (validated), cached by (judge model, prompt hash) under the data home.
    Without a configured endpoint it skips and says so; it never invents scores. A failed or
    invalid answer is a row with its status and error, not a score. Each row names the rubric
    version it was judged under (the rubric's text is in the prompt, so a changed rubric is a new
    cache key and a new judgement)."""
    add_missing_columns(warehouse, "labeling.judge_labels", pl.Schema(JUDGE_LABELS))  # an older home's table
    if not judge.configured:
        message = ("no judge endpoint configured: set EVAL_PIPELINE_JUDGE_BASE_URL and EVAL_PIPELINE_JUDGE_MODEL "
                   "(and EVAL_PIPELINE_JUDGE_API_KEY if the endpoint needs one); skipped, no scores")
        context.log.info(message)
        return dg.Output(_frame([], JUDGE_LABELS), metadata={"dagster/row_count": 0, "skipped": message})
    rubrics = labeling.rubrics()
    items, meta = [], []
    for ex in eval_set.to_dicts():
        rubric = rubric_for(rubrics, ex["task_type"])
        if rubric is None:
            continue
        items.append((rubric, ex["messages"], ex["context_chunks"], ex["production_output"] or ""))
        meta.append((ex, rubric))
    runner = judge.judge(settings.data_home.cache / "judge")
    results = runner.judge_many(items, max_workers=judge.max_workers)
    rows = []
    for (ex, rubric), result in zip(meta, results):
        base = {"month_start": ex["month_start"], "eval_set_version": ex["eval_set_version"], "example_id": ex["example_id"],
                "task_type": ex["task_type"], "rubric": rubric.name, "status": result.status, "error": result.error,
                "judge_model": result.judge_model, "cached": result.cached, "rubric_version": rubric_version(rubric)}
        if result.status == "ok":
            rows += [{**base, "criterion": c, "score": s, "justification": result.justifications.get(c)}
                     for c, s in sorted(result.scores.items())]
        else:
            rows.append({**base, "criterion": None, "score": None, "justification": None})
    df = _frame(rows, JUDGE_LABELS)
    stats = runner.stats
    statuses = Counter(r.status for r in results)
    return dg.Output(df, metadata={
        "dagster/row_count": df.height,
        "judge_model": runner.provider.model_id,
        "examples": len(results),
        "by_status": dg.MetadataValue.json(dict(statuses)),
        "requests": stats.requests,
        "cache_hits": stats.cache_hits,
        "failures": dg.MetadataValue.md(markdown_table(df.filter(pl.col("status") != "ok")
                                                       .select("example_id", "status", "error").head(20))),
    })


# --------------------------------------------------------------------------------------------
# Labels in, agreement, gold (unpartitioned: every eval-set version's examples)
# --------------------------------------------------------------------------------------------

HUMAN_LABELS = {"example_id": pl.String, "eval_set_version": pl.String, "task_type": pl.String, "rubric": pl.String,
                "scale": pl.String, "criterion": pl.String, "annotator": pl.String, "score": pl.Int64,
                "source_file": pl.String, "source_ref": pl.String,
                # added after the first layout: last, and added to an existing table (add_missing_columns)
                "rubric_version": pl.String}
HUMAN_REFERENCES = {"example_id": pl.String, "eval_set_version": pl.String, "annotator": pl.String,
                    "reference": pl.String, "source_file": pl.String, "source_ref": pl.String}
LABEL_QUARANTINE = {"source_file": pl.String, "line_or_task": pl.String, "example_id": pl.String,
                    "annotator": pl.String, "field": pl.String, "reason": pl.String, "message": pl.String}


@dg.multi_asset(
    group_name="labeling",
    outs={
        "human_labels": dg.AssetOut(kinds=KINDS, metadata=_LABELS,
                                    description="Accepted human scores: one row per example, annotator and criterion."),
        "human_references": dg.AssetOut(kinds=KINDS, metadata=_LABELS,
                                        description="Reference answers annotators gave or confirmed."),
        "label_quarantine": dg.AssetOut(kinds=KINDS, metadata=_LABELS,
                                        description="Every annotation item that was not accepted, with file, place and reason."),
    },
)
def human_labels(context: dg.AssetExecutionContext, settings: PipelineSettings, labeling: LabelingSettings,
                 warehouse: DuckDBResource, eval_set: pl.DataFrame):
    """Reads every completed annotation file in ``<data home>/labels/inbox/`` (Label Studio JSON
    exports, or the plain JSONL/CSV filled in) against the examples of every eval-set version.
    Unknown example ids, unknown criteria, out-of-range or non-numeric scores, missing annotators
    and duplicates are quarantined with their reason, never dropped; the counts reconcile.
    Each label keeps the rubric version its task names; a task written before versions existed
    takes the version ``annotation_tasks`` recorded for that example and rubric (when only one
    was), else ``unknown``, never the current one."""
    examples = ({r["example_id"]: r for r in eval_set.select("example_id", "eval_set_version", "task_type").to_dicts()}
                if eval_set.height else {})  # no eval set yet: every label is for an unknown example
    rubrics = labeling.rubrics()
    recorded: dict[tuple[str, str], set] = {}
    for r in stored_columns(warehouse, "labeling.annotation_tasks", ("example_id", "rubric", "rubric_version")):
        if r["rubric_version"]:
            recorded.setdefault((r["example_id"], r["rubric"]), set()).add(r["rubric_version"])
    export_versions = {key: next(iter(v)) for key, v in recorded.items() if len(v) == 1}
    batch = read_annotation_folder(settings.data_home.labels_inbox, examples, rubrics, export_versions=export_versions)
    labels = _frame(batch.labels, HUMAN_LABELS)
    references = _frame(batch.references, HUMAN_REFERENCES)
    quarantine = _frame([{**q, "line_or_task": str(q.get("line_or_task"))} for q in batch.quarantine], LABEL_QUARANTINE)
    if not batch.reconciles:
        raise dg.Failure(f"annotation counts do not reconcile: {batch.counts}")
    counts = dg.MetadataValue.json(batch.counts)
    add_missing_columns(warehouse, "labeling.human_labels", pl.Schema(HUMAN_LABELS))  # an older home's table
    current = _current_versions(rubrics)
    yield dg.Output(labels, output_name="human_labels", metadata={
        "dagster/row_count": labels.height, "counts": counts,
        "labels_per_rubric_version": dg.MetadataValue.json(batch.rubric_versions()),
        "current_rubric_versions": dg.MetadataValue.json(current),
        "annotators": dg.MetadataValue.json(sorted(set(labels["annotator"].to_list()))),
        "examples_labelled": labels["example_id"].n_unique() if labels.height else 0,
        "inbox": dg.MetadataValue.path(str(settings.data_home.labels_inbox))})
    yield dg.Output(references, output_name="human_references", metadata={"dagster/row_count": references.height})
    yield dg.Output(quarantine, output_name="label_quarantine", metadata={
        "dagster/row_count": quarantine.height, "by_reason": dg.MetadataValue.json(batch.reasons()),
        "preview": dg.MetadataValue.md(markdown_table(quarantine.select("source_file", "line_or_task", "reason", "message")
                                                      .head(20), max_cell=100))})


JUDGE_BIAS_PROBES = {"month_start": pl.Datetime("us"), "eval_set_version": pl.String, "probe": pl.String,
                     "group": pl.String, "criterion": pl.String, "pairs": pl.Int64, "skipped": pl.Int64,
                     "original_rate": pl.Float64, "variant_rate": pl.Float64, "shift": pl.Float64, "low": pl.Float64,
                     "high": pl.Float64, "p_value": pl.Float64, "miss_rate": pl.Float64, "miss_low": pl.Float64,
                     "miss_high": pl.Float64, "flagged": pl.Boolean, "note": pl.String}
JUDGE_HUMAN_GAP = {"month_start": pl.Datetime("us"), "eval_set_version": pl.String, "dimension": pl.String,
                       "bin": pl.String, "group": pl.String, "criterion": pl.String, "pairs": pl.Int64,
                       "judge_rate": pl.Float64, "human_rate": pl.Float64, "difference": pl.Float64,
                       "low": pl.Float64, "high": pl.Float64, "p_value": pl.Float64, "flagged": pl.Boolean,
                       "note": pl.String}
NO_JUDGE = ("no judge endpoint configured: set EVAL_PIPELINE_JUDGE_BASE_URL and EVAL_PIPELINE_JUDGE_MODEL "
            "(and EVAL_PIPELINE_JUDGE_API_KEY if the endpoint needs one)")


class JudgeProbesConfig(dg.Config):
    """``sample``: examples with human labels to probe (stratified by task type); ``threshold``:
    the smallest shift (or miss rate) flagged; ``seed``: the sample and the variants."""

    sample: int = DEFAULT_SAMPLE
    threshold: float = DEFAULT_THRESHOLD
    seed: int = 0


def _probe_view(rows: list[dict]) -> str:
    if not rows:
        return "(no rows)"
    view = pl.DataFrame([{"probe": r["probe"], "criterion": f"{r['group']}.{r['criterion']}", "pairs": r["pairs"],
                          "shift": None if r["shift"] is None else round(r["shift"], 3),
                          "95% CI": "" if r["low"] is None else f"{r['low']:+.2f} to {r['high']:+.2f}",
                          "miss rate": None if r["miss_rate"] is None else round(r["miss_rate"], 3),
                          "flagged": r["flagged"], "note": r["note"]} for r in rows])
    return markdown_table(view, max_cell=120)


@dg.multi_asset(
    group_name="labeling", partitions_def=monthly_partitions,
    outs={
        "judge_bias_probes": dg.AssetOut(
            kinds=KINDS | {"openai"}, metadata={**_LABELS, "partition_expr": "month_start"},
            description="Pass-rate shift of the judge per probe (length, hedging, confidence, planted error) and "
                        "criterion, with paired intervals, McNemar p and flags."),
        "judge_human_gap": dg.AssetOut(
            kinds=KINDS, metadata={**_LABELS, "partition_expr": "month_start"},
            description="Judge-minus-human pass-rate difference per criterion by output-length quartile and by "
                        "hedging, on the human-labelled examples."),
    },
)
def judge_bias_probes(context: dg.AssetExecutionContext, config: JudgeProbesConfig, settings: PipelineSettings,
                      labeling: LabelingSettings, judge: JudgeSettings, eval_set: pl.DataFrame,
                      human_labels: pl.DataFrame, judge_labels: pl.DataFrame):
    """Bias probes of the LLM judge on a sample of the month's examples that have human labels:
    each production output and controlled variants of it (padded to twice the length, hedged,
    confidently framed, one fact changed) are judged, and the paired verdicts give each probe's
    pass-rate shift per criterion (``lib/labeling/judge_probes.py``). The observed bias needs no judge
    call: the month's judge labels against the human majority, by output length and hedging.
    Without a judge endpoint or human labels it writes empty tables and says why."""
    month_start = datetime.fromisoformat(context.partition_key)
    examples = eval_set.to_dicts()
    version = examples[0]["eval_set_version"] if examples else None
    rubrics = labeling.rubrics()
    current_labels, _ = current_version_labels(human_labels.to_dicts(), rubrics)  # never another version's
    gold = majority_labels(current_labels)
    month_ids = {ex["example_id"] for ex in examples}
    labelled = {g["example_id"] for g in gold} & month_ids
    base = {"month_start": month_start, "eval_set_version": version}

    def rubric_of(task_type):
        return rubric_for(rubrics, task_type)

    probe_meta: dict[str, Any] = {}
    probes: list[dict] = []
    if not labelled:
        probe_meta["skipped"] = (f"no human labels for the examples of {context.partition_key[:7]}: annotate them "
                                 "first (labels inbox); no probes run")
    elif not judge.configured:
        probe_meta["skipped"] = f"{NO_JUDGE}; no probes run"
    else:
        sample = sample_examples(examples, labelled, config.sample, config.seed)
        by_task: dict[str, list] = {}
        for ex in examples:
            by_task.setdefault(ex["task_type"], []).append(ex.get("production_output"))
        runner = judge.judge(settings.data_home.cache / "judge")
        run = run_probes(sample, rubric_of, runner, seed=config.seed,
                         labels={t: label_values(outs) for t, outs in by_task.items()}, max_workers=judge.max_workers)
        probes = probe_rows(run, threshold=config.threshold)
        probe_meta.update({"judge_model": runner.provider.model_id, "sampled_examples": run.sampled,
                           "requests": run.requests, "cache_hits": runner.stats.cache_hits})
    if "skipped" in probe_meta:
        context.log.info(probe_meta["skipped"])

    # observed bias: this month's judge labels against the human majority (no judge call)
    judged = _current_judge_scores(judge_labels, rubrics)
    items = judge_human_pairs(gold, judged, {ex["example_id"]: ex.get("production_output") for ex in examples},
                              rubrics)
    observed = observed_bias(items, threshold=config.threshold) if items else []
    observed_meta = {} if items else {"skipped": "no example has both a judge label and a human label this month"
                                      + (f" ({NO_JUDGE})" if not judge.configured else "")}

    probes_df = _frame([{**base, **r} for r in probes], JUDGE_BIAS_PROBES)
    observed_df = _frame([{**base, **r} for r in observed], JUDGE_HUMAN_GAP)
    flags = [f"{r['probe']}: {r['group']}.{r['criterion']} ({r['note']})" for r in probes if r["flagged"]]
    yield dg.Output(probes_df, output_name="judge_bias_probes", metadata={
        "dagster/row_count": probes_df.height, "threshold": config.threshold, **probe_meta,
        "flagged": dg.MetadataValue.json(flags), "probes": dg.MetadataValue.md(_probe_view(probes))})
    yield dg.Output(observed_df, output_name="judge_human_gap", metadata={
        "dagster/row_count": observed_df.height, **observed_meta,
        "flagged": dg.MetadataValue.json([f"{r['group']}.{r['criterion']} {r['dimension']} {r['bin']} ({r['note']})"
                                          for r in observed if r["flagged"]])})


LABEL_AGREEMENT = {"group": pl.String, "criterion": pl.String, "scale": pl.String, "method": pl.String,
                   "weights": pl.String, "value": pl.Float64, "band": pl.String, "n_items": pl.Int64,
                   "n_annotators": pl.Int64, "pairwise_agreement": pl.Float64, "unclear_rubric": pl.Boolean,
                   "disagreement_about_quality": pl.Boolean, "flags": pl.String, "note": pl.String,
                   # added after the first layout: last, and added to an existing table (add_missing_columns)
                   "rubric_version": pl.String, "current_version": pl.Boolean}


def _current_judge_scores(judge_labels: pl.DataFrame, rubrics) -> dict[tuple[str, str], int]:
    """{(example_id, criterion): score} of the judge labels made under their rubric's current
    version (rows of an older table without versions are not)."""
    if not judge_labels.height or "rubric_version" not in judge_labels.columns:
        return {}
    current = _current_versions(rubrics)
    return {(r["example_id"], r["criterion"]): r["score"]
            for r in judge_labels.filter(pl.col("status") == "ok").iter_rows(named=True)
            if r["rubric_version"] is not None and current.get(r["rubric"]) == r["rubric_version"]}


@dg.asset(group_name="labeling", kinds=KINDS, metadata=_LABELS)
def label_agreement(context: dg.AssetExecutionContext, labeling: LabelingSettings, warehouse: DuckDBResource,
                    human_labels: pl.DataFrame) -> dg.Output[pl.DataFrame]:
    """Agreement per rubric, rubric version and criterion: Cohen's kappa for two annotators,
    Krippendorff's alpha for more (missing labels allowed); labels of two rubric versions are never
    pooled, and ``current_version`` marks the rows of each rubric's current version. Below 0.6 the
    criterion is flagged as an unclear rubric, below 0.4 as a disagreement about what quality
    means; examples with disagreeing annotators are counted per criterion."""
    labels = human_labels.to_dicts()
    current = _current_versions(labeling.rubrics())
    rows = criterion_agreement(labels)
    disagreements = Counter((d.get("group"), d.get("rubric_version"), d["criterion"])
                            for d in example_disagreements(labels))
    for row in rows:
        row["flags"] = ", ".join(row["flags"])
        row["examples_in_disagreement"] = disagreements.get((row["group"], row["rubric_version"], row["criterion"]), 0)
        row["current_version"] = current.get(row["group"]) == row["rubric_version"]
    df = _frame(rows, LABEL_AGREEMENT)
    add_missing_columns(warehouse, "labeling.label_agreement", pl.Schema(LABEL_AGREEMENT))  # an older home's table
    flagged = [f"{r['group']}@{r['rubric_version']}.{r['criterion']} ({r['value']:.2f}: {r['flags']})" for r in rows
               if r["value"] is not None and r["flags"] and r["current_version"]]
    view = pl.DataFrame([{"criterion": f"{r['group']}.{r['criterion']}", "rubric_version": r["rubric_version"],
                          "current": r["current_version"], "method": r["method"],
                          "value": None if r["value"] is None else round(r["value"], 3), "band": r["band"],
                          "items": r["n_items"], "annotators": r["n_annotators"],
                          "disagreeing examples": r["examples_in_disagreement"], "flags": r["flags"] or r["note"]}
                         for r in rows]) if rows else pl.DataFrame()
    return dg.Output(df, metadata={
        "dagster/row_count": df.height,
        "flagged": dg.MetadataValue.json(flagged),
        "agreement": dg.MetadataValue.md(markdown_table(view, max_cell=90) if rows else "(no labels yet)"),
    })


GOLD_LABELS = {"example_id": pl.String, "eval_set_version": pl.String, "task_type": pl.String, "group": pl.String,
               "criterion": pl.String, "scale": pl.String, "score": pl.Int64, "n_annotators": pl.Int64,
               "agreement_share": pl.Float64, "disagreement": pl.Boolean, "tie": pl.Boolean,
               "labels": pl.String, "minority_labels": pl.String, "judge_score": pl.Int64,
               # added after the first layout: last, and added to an existing table (add_missing_columns)
               "rubric_version": pl.String}
GOLD_REFERENCES = {"example_id": pl.String, "eval_set_version": pl.String, "task_type": pl.String, "rubric": pl.String,
                   "reference": pl.String, "n_annotators": pl.Int64, "agreement_share": pl.Float64, "tie": pl.Boolean,
                   "production_output": pl.String, "exact_match": pl.Float64, "token_f1": pl.Float64,
                   "rouge_l": pl.Float64,
                   # added after the first layout: last, and added to an existing table (add_missing_columns)
                   "bertscore_f1": pl.Float64}
REVIEW_QUEUE = {"example_id": pl.String, "group": pl.String, "criterion": pl.String, "judge_score": pl.Int64,
                "majority_score": pl.Int64, "labels": pl.String, "minority_labels": pl.String, "tie": pl.Boolean}


@dg.multi_asset(
    group_name="labeling",
    outs={
        "gold_labels": dg.AssetOut(kinds=KINDS, metadata=_LABELS,
                                   description="Majority human label per example and criterion, with disagreement flags and the minority kept."),
        "gold_references": dg.AssetOut(kinds=KINDS, metadata=_LABELS,
                                       description="Adjudicated reference answers, with the production output's reference metrics."),
        "review_queue": dg.AssetOut(kinds=KINDS, metadata=_LABELS,
                                    description="Example criteria where the judge agrees with the minority of the humans."),
    },
)
def gold_labels(context: dg.AssetExecutionContext, settings: PipelineSettings, labeling: LabelingSettings,
                warehouse: DuckDBResource, eval_set: pl.DataFrame, human_labels: pl.DataFrame,
                human_references: pl.DataFrame, judge_labels: pl.DataFrame, judge_bias_probes: pl.DataFrame,
                judge_human_gap: pl.DataFrame):
    """Adjudicated labels: the majority per example and criterion (a tie goes to the stricter
    level and is flagged), the minority kept. References: the annotators' majority answer, and
    for task types with one correct answer the production output scored against it (exact match,
    token F1, ROUGE-L, BERTScore F1; one model call for all of them). Judge calibration per
    criterion (kappa against the human majority, with a 95% interval; a warning under 0.6) is in
    the metadata, and the review queue (also written to
    ``<data home>/reports/labels/review_queue.csv``) lists where the judge sides with the minority.
    The latest month's judge bias probe flags and observed-bias summary sit beside the calibration
    (none yet: it says so).

    Only labels of each rubric's current version are used, human and judge alike; labels of older
    versions (and ``unknown``) stay in ``human_labels`` and are counted in the metadata."""
    rubrics = labeling.rubrics()
    current_labels, older = current_version_labels(human_labels.to_dicts(), rubrics)
    gold = majority_labels(current_labels)
    judged = _current_judge_scores(judge_labels, rubrics)
    for row in gold:
        row["judge_score"] = judged.get((row["example_id"], row["criterion"]))
    examples = ({r["example_id"]: r for r in eval_set.select("example_id", "task_type", "production_output").to_dicts()}
                if eval_set.height else {})
    adjudicated = sorted(adjudicated_references(human_references.to_dicts()).items())
    # a reference of an example no longer in the set has no rubric (not the default one)
    rubric_of = {eid: rubric_for(rubrics, examples[eid]["task_type"]) if eid in examples else None
                 for eid, _ in adjudicated}
    # all references' metrics at once: BERTScore is one model call, not one per example
    metrics = score_references([(rubric_of[eid], examples.get(eid, {}).get("production_output"), ref["reference"])
                                for eid, ref in adjudicated])
    references = []
    for (eid, ref), scores in zip(adjudicated, metrics):
        ex, rubric = examples.get(eid, {}), rubric_of[eid]
        references.append({**ref, "example_id": eid, "task_type": ex.get("task_type"),
                           "rubric": rubric.name if rubric else None,
                           "production_output": ex.get("production_output"), **scores})
    queue = review_queue(gold, judged) if judged else []
    calibration = judge_calibration(gold, judged) if judged else []
    gold_df, refs_df, queue_df = _frame(gold, GOLD_LABELS), _frame(references, GOLD_REFERENCES), _frame(queue, REVIEW_QUEUE)
    reports = settings.data_home.reports / "labels"
    reports.mkdir(parents=True, exist_ok=True)
    queue_df.write_csv(reports / "review_queue.csv")
    # an undefined kappa (a judge giving every item one score, a handful of items) is a warning too
    warnings = [f"{c['group']}.{c['criterion']}: " + (f"judge kappa {c['kappa']:.2f}" if c["kappa"] is not None
                                                       else f"judge {c['warning']}")
                for c in calibration if c.get("warning")]
    add_missing_columns(warehouse, "labeling.gold_labels", pl.Schema(GOLD_LABELS))  # an older home's table
    yield dg.Output(gold_df, output_name="gold_labels", metadata={
        "dagster/row_count": gold_df.height,
        "rubric_versions": dg.MetadataValue.json(_current_versions(rubrics)),
        "older_version_labels": dg.MetadataValue.json(older),
        "older_versions_note": (f"{sum(older.values())} labels of older rubric versions, not used"
                                + (f" ({', '.join(f'{n}: {k}' for n, k in older.items())})" if older else "")),
        "examples": gold_df["example_id"].n_unique() if gold_df.height else 0,
        "in_disagreement": int(gold_df["disagreement"].sum()) if gold_df.height else 0,
        "ties": int(gold_df["tie"].sum()) if gold_df.height else 0,
        "judge_calibration": dg.MetadataValue.md(markdown_table(pl.DataFrame(calibration)) if calibration
                                                 else "(no judge labels: configure a judge endpoint)"),
        "judge_warnings": dg.MetadataValue.json(warnings),
        **judge_bias_summary(judge_bias_probes, judge_human_gap),
    })
    metric_means = {m: round(float(refs_df[m].mean()), 3) for m in REFERENCE_SCORERS
                    if refs_df.height and refs_df[m].drop_nulls().len()}
    add_missing_columns(warehouse, "labeling.gold_references", pl.Schema(GOLD_REFERENCES))  # an older home's table
    yield dg.Output(refs_df, output_name="gold_references", metadata={
        "dagster/row_count": refs_df.height, "production_output_vs_reference": dg.MetadataValue.json(metric_means)})
    yield dg.Output(queue_df, output_name="review_queue", metadata={
        "dagster/row_count": queue_df.height, "file": dg.MetadataValue.path(str(reports / "review_queue.csv"))})


def latest_month(df: pl.DataFrame) -> pl.DataFrame:
    """The rows of the latest ``month_start`` of a monthly table (empty stays empty)."""
    if not df.height or "month_start" not in df.columns:
        return df.clear() if df.width else df
    return df.filter(pl.col("month_start") == df["month_start"].max())


def judge_bias_summary(probes: pl.DataFrame, observed: pl.DataFrame) -> dict[str, Any]:
    """Metadata for ``gold_labels``: the latest month's probe flags and flagged observed-bias bins."""
    probes, observed = latest_month(probes), latest_month(observed)
    if not probes.height and not observed.height:
        return {"judge_bias_flags": dg.MetadataValue.json([]),
                "judge_observed_bias": dg.MetadataValue.md("(no judge bias probes yet: run `eval-pipeline probe-judge`)")}
    flags = [f"{r['probe']}: {r['group']}.{r['criterion']} ({r['note']})"
             for r in probes.filter(pl.col("flagged")).iter_rows(named=True)] if probes.height else []
    view = (observed.filter(pl.col("pairs") > 0)
            .select("dimension", "bin", "group", "criterion", "pairs", "difference", "low", "high", "flagged")
            .with_columns(pl.col(pl.Float64).round(3)) if observed.height else observed)
    return {"judge_bias_flags": dg.MetadataValue.json(flags),
            "judge_observed_bias": dg.MetadataValue.md(markdown_table(view.head(40), max_cell=60) if view.height
                                                       else "(no observed bias rows)")}


judge_probes_job = dg.define_asset_job(
    "judge_probes_job", selection=dg.AssetSelection.assets("judge_bias_probes", "judge_human_gap"),
    partitions_def=monthly_partitions,
)

labeling_job = dg.define_asset_job(
    "labeling_job",
    selection=dg.AssetSelection.assets("human_labels", "human_references", "label_quarantine", "label_agreement",
                                       "gold_labels", "gold_references", "review_queue"),
)
