"""Eval-set versions: the initial set, monthly refreshes, the changelog, coverage and export.

Plain Python for the ``eval_set`` asset and the ``export-eval-set`` command (no Dagster import).
The sampling itself is :mod:`eval_pipeline.lib.sampling.draw`; this module turns a sample into rows of
the eval-example contract (DESIGN.md), versions them and reports on them.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from eval_pipeline.lib.ingest.records import FAILURE_SIGNALS
from eval_pipeline.lib.sampling.draw import SamplingConfig, Selected, draw_sample, plan_refresh, reweight

__all__ = [
    "example_id",
    "example_category",
    "UNKNOWN_CATEGORY",
    "version_number",
    "next_version",
    "base_version",
    "reusable_version",
    "failure_signals",
    "conversation_up_to_turn",
    "VersionBuild",
    "build_version",
    "changelog_markdown",
    "coverage_table",
    "plot_coverage",
    "with_removed_in",
    "export_rows",
    "EXPORT_FORMATS",
]

EXPORT_FORMATS = ("jsonl", "parquet", "csv")
_VERSION = re.compile(r"^v(\d+)$")


def example_id(request_id: str) -> str:
    """A stable id for the example made from a record: ``ex_`` + 12 hex digits of SHA-256."""
    return "ex_" + hashlib.sha256(request_id.encode("utf-8")).hexdigest()[:12]


def version_number(name: str | None) -> int:
    """``v12`` -> 12 (0 for anything else), the order of versions."""
    m = _VERSION.match(name or "")
    return int(m.group(1)) if m else 0


def next_version(existing: Sequence[str]) -> str:
    """``v1`` when there is none, else one more than the largest ``vN``."""
    return f"v{max((version_number(v) for v in existing), default=0) + 1}"


def base_version(versions: Sequence[Mapping[str, Any]], changelog: Sequence[Mapping[str, Any]],
                 month: date) -> tuple[list[str], str | None]:
    """Every version name in order, and the latest version made for a month before ``month`` (the
    one a refresh of ``month`` starts from). A version whose examples were all removed has rows
    only in the changelog, so both tables are looked at."""
    months = {(r["eval_set_version"], r["month"]) for r in list(versions) + list(changelog)}
    names = sorted({v for v, _ in months}, key=version_number)
    earlier = [v for v, m in months if m < month]
    return names, max(earlier, key=version_number, default=None)


def reusable_version(versions: Sequence[Mapping[str, Any]], month: date, build: "VersionBuild") -> str | None:
    """The version to keep instead of writing ``build``: the one the build leaves ``unchanged``, or
    the latest version already made for ``month`` when it holds exactly the build's examples (a
    re-run of the month)."""
    if build.unchanged:
        return build.version
    same_month = [r for r in versions if r["month"] == month]
    latest = max({r["eval_set_version"] for r in same_month}, key=version_number, default=None)
    if latest is None:
        return None
    existing = {r["example_id"] for r in same_month if r["eval_set_version"] == latest}
    return latest if existing == {r["example_id"] for r in build.rows} else None


def failure_signals(row: Mapping[str, Any]) -> list[str]:
    out = []
    for signal in FAILURE_SIGNALS:
        value = row.get("thumbs") == "down" if signal == "thumbs_down" else row.get(signal)
        if value:
            out.append(signal)
    return out


def conversation_up_to_turn(messages: Sequence[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    """The prompt as the model saw it: every message up to and including the last user message
    (the system prompt and injected context included)."""
    messages = list(messages or [])
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=len(messages) - 1)
    return [dict(m) for m in messages[: last_user + 1]]


@dataclass
class VersionBuild:
    """A new version's rows and changelog, or ``unchanged`` when it would equal ``previous``."""

    version: str
    rows: list[dict[str, Any]]
    changelog: list[dict[str, Any]]
    messages: list[str] = field(default_factory=list)
    initial: bool = False
    unchanged: bool = False  # nothing to refresh from: ``rows`` are the previous version's, as they are
    allocation: str = "proportional"  # how the additions were allocated: proportional or neyman
    desired: dict[str, int] = field(default_factory=dict)  # stratum -> examples the allocation wants

    def churn(self, previous_size: int) -> dict[str, Any]:
        """Size and churn of this version: added, removed and moved (reassigned) examples, each
        also as a share of the previous version's size."""
        counts = {action: sum(1 for c in self.changelog if c["action"] == action)
                  for action in ("added", "removed", "reassigned")}
        base = max(previous_size, 1)
        return {"size": len(self.rows), "previous_size": previous_size, "added": counts["added"],
                "removed": counts["removed"], "moved": counts["reassigned"],
                "churn": round((counts["added"] + counts["removed"] + counts["reassigned"]) / base, 4) if previous_size else None}


UNKNOWN_CATEGORY = "unknown"


def example_category(record: Mapping[str, Any]) -> str:
    """The category an example is sliced and gated by: its task type when the logs carry one,
    else its cluster (``cluster:c0003``, ``cluster:unclustered``), else ``unknown``. Logs without
    task types thus still get a slice per kind of traffic, and never a null category."""
    task_type = record.get("task_type")
    if task_type:
        return str(task_type)
    cluster = record.get("cluster_id")
    return f"cluster:{cluster}" if cluster else UNKNOWN_CATEGORY


def _example(record: Mapping[str, Any], selected: Selected, version: str, month: date, reason: str,
             slice_keys: Sequence[str]) -> dict[str, Any]:
    category = example_category(record)
    slice_ = {"category": category}
    slice_.update({key: record.get(key) for key in slice_keys})
    return {
        "eval_set_version": version,
        "month": month,
        "month_start": datetime(month.year, month.month, 1),
        "example_id": example_id(record["request_id"]),
        "request_id": record["request_id"],
        "conversation_id": record.get("conversation_id"),
        "turn_index": record.get("turn_index"),
        "timestamp": record.get("timestamp"),
        "messages": conversation_up_to_turn(record.get("messages")),
        "context_chunks": list(record.get("retrieved_chunks") or []),
        "production_output": record.get("completion"),
        "reference": None,
        "task_type": record.get("task_type"),
        "category": category,
        "slice": json.dumps(slice_, sort_keys=True),
        "cluster_id": record.get("cluster_id"),
        "stratum": selected.stratum,
        "inclusion_probability": selected.inclusion_probability,
        "represents": selected.represents,
        "weight": selected.weight,
        "failure_signals": failure_signals(record),
        "added_in": version,
        "removed_in": None,
        "reason": reason,
    }


def build_version(
    records: Sequence[Mapping[str, Any]],
    vectors: np.ndarray,
    month: date,
    config: SamplingConfig,
    *,
    previous: Sequence[Mapping[str, Any]] = (),
    drift: Sequence[Mapping[str, Any]] = (),
    existing_versions: Sequence[str] = (),
    created_at: datetime | None = None,
    details: Callable[[Sequence[Mapping[str, Any]]], Sequence[Mapping[str, Any]]] | None = None,
    outcomes: Mapping[str, tuple[int, int]] | None = None,
    stale: Mapping[str, str] | None = None,
) -> VersionBuild:
    """The next version: the initial draw when there is no previous version, else a refresh.

    ``records``: the month's redacted records joined with their ``cluster_id`` (the fields of
    ``redacted_logs`` plus ``cluster_id``), aligned with ``vectors``. ``previous``: the rows of
    the latest earlier version. The changelog has one row per added or removed example.
    ``details``: when ``records`` hold only what the draw reads (ids, cluster, signals, slice
    fields), a function that returns the chosen records in full (``messages``,
    ``retrieved_chunks``, ``completion`` added), in the order given; called once, with only
    the records that become examples, so a month's texts never have to be in memory at once.
    ``outcomes``: stratum -> (passed, scored) on the previous version (the last scorecard), for
    the Neyman allocation of a refresh's additions (:func:`sampling.plan_refresh`). A refreshed
    version's inclusion probabilities are recomputed against this month's traffic
    (:func:`sampling.reweight`). ``stale``: example_id -> reason, examples whose topic left
    the traffic (``identity.stale_examples``), removed.
    """
    version = next_version(existing_versions)
    created_at = created_at or datetime.now()

    def full(indices: Sequence[int]) -> dict[int, Mapping[str, Any]]:
        chosen = [records[i] for i in indices]
        return dict(zip(indices, details(chosen) if details is not None and chosen else chosen))

    if not previous:
        result = draw_sample(records, vectors, config)
        chosen = full([s.index for s in result.selected])
        rows = [_example(chosen[s.index], s, version, month, "initial draw", config.slice_keys) for s in result.selected]
        changelog = [_change(version, month, created_at, row["example_id"], "added", "initial draw", row) for row in rows]
        messages = list(result.messages)
        if not rows:
            messages.append(f"{version} would be empty: no records in {month:%Y-%m}")
        return VersionBuild(version, rows, changelog, messages, initial=True)

    if not records:
        name = previous[0]["eval_set_version"]
        return VersionBuild(name, [dict(p) for p in previous], [], [
            f"no records in {month:%Y-%m}: nothing to refresh from, {name} stays the current version"], unchanged=True)
    plan = plan_refresh(previous, records, vectors, drift, config,
                        taken_request_ids={p["request_id"] for p in previous}, outcomes=outcomes, stale=stale)
    keep = set(plan.keep)
    rows = []
    changelog = []
    for old in previous:
        if old["example_id"] in keep:
            row = {**old, "eval_set_version": version, "month": month, "month_start": datetime(month.year, month.month, 1)}
            if old["example_id"] in plan.reassign:
                row["cluster_id"], row["stratum"], why = plan.reassign[old["example_id"]]
                changelog.append(_change(version, month, created_at, row["example_id"], "reassigned", why, row))
            rows.append(row)
    by_id = {p["example_id"]: p for p in previous}
    changelog += [_change(version, month, created_at, eid, "removed", reason, by_id[eid]) for eid, reason in plan.remove]
    chosen = full([s.index for s in plan.add])
    for s in plan.add:
        row = _example(chosen[s.index], s, version, month, plan.reasons[s.index], config.slice_keys)
        rows.append(row)
        changelog.append(_change(version, month, created_at, row["example_id"], "added", row["reason"], row))
    probabilities = reweight(rows, records, config)
    for row in rows:
        if row["example_id"] in probabilities:
            pi, represents = probabilities[row["example_id"]]
            row.update(inclusion_probability=pi, represents=represents, weight=represents / pi)
    return VersionBuild(version, rows, changelog, list(plan.messages), allocation=plan.allocation, desired=plan.desired)


def _change(version: str, month: date, created_at: datetime, eid: str, action: str, reason: str,
            row: Mapping[str, Any]) -> dict[str, Any]:
    return {"eval_set_version": version, "month": month, "created_at": created_at, "example_id": eid,
            "action": action, "reason": reason, "cluster_id": row.get("cluster_id"), "stratum": row.get("stratum")}


def summary_line(summary: Mapping[str, Any]) -> str:
    """One version's size, churn and continuing traffic as a line of text."""
    parts = [f"{summary['size']} examples (target {summary['target_size']})"]
    if summary.get("churn") is not None:
        parts.append(f"churn {100 * summary['churn']:.1f}% of {summary['previous_size']} "
                     f"({summary['added']} added, {summary['removed']} removed, {summary['moved']} moved)")
    if summary.get("continuing_share") is not None:
        parts.append(f"{100 * summary['continuing_share']:.1f}% of the month's traffic in continuing clusters")
    if summary.get("cluster_mode") == "refit":
        parts.append("clusters refitted this month (ids mapped old -> new in the moves)")
    if summary.get("allocation") == "neyman":
        parts.append("additions by Neyman allocation on the last scorecard")
    return "; ".join(parts)


def changelog_markdown(changelog: Sequence[Mapping[str, Any]], sizes: Mapping[str, int] | None = None,
                       max_lines: int = 12, summaries: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    """CHANGELOG-style text, newest version first: per version the counts (and, with
    ``summaries``, size against target, churn and the share of traffic in continuing clusters),
    then the reasons (grouped, with how many examples each)."""
    by_version: dict[str, list[Mapping[str, Any]]] = {}
    for row in changelog:
        by_version.setdefault(row["eval_set_version"], []).append(row)

    out = []
    for version in sorted(by_version, key=version_number, reverse=True):
        rows = by_version[version]
        month = rows[0]["month"]
        added = [r for r in rows if r["action"] == "added"]
        removed = [r for r in rows if r["action"] == "removed"]
        moved = [r for r in rows if r["action"] == "reassigned"]
        size = f", {sizes[version]} examples" if sizes and version in sizes else ""
        out.append(f"## {version} ({month:%Y-%m}){size}")
        out.append(f"{len(added)} added, {len(removed)} removed" + (f", {len(moved)} moved to a re-cut cluster" if moved else ""))
        if summaries and version in summaries:
            out.append(summary_line(summaries[version]))
        for action, group in (("Added", added), ("Removed", removed), ("Moved", moved)):
            if not group:
                continue
            out.append(f"### {action}")
            reasons = Counter(r["reason"] for r in group)
            for reason, count in reasons.most_common(max_lines):
                out.append(f"- {count} x {reason}")
            if len(reasons) > max_lines:
                out.append(f"- ... {len(reasons) - max_lines} more reasons")
        out.append("")
    return "\n".join(out).strip() or "(no changes)"


def coverage_table(examples: Sequence[Mapping[str, Any]], records: Sequence[Mapping[str, Any]],
                   slice_keys: Sequence[str] = ()) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Per stratum of this month's traffic: records, traffic share, examples in the set, set
    share, and their ratio; plus a summary (strata not covered, failure-signal shares)."""
    from eval_pipeline.lib.sampling.draw import stratum_of

    traffic = Counter(stratum_of(r, slice_keys) for r in records)
    in_set = Counter(e["stratum"] for e in examples)
    total, n = sum(traffic.values()), len(examples)
    table = []
    for stratum in sorted(set(traffic) | set(in_set), key=lambda s: (-traffic.get(s, 0), s)):
        t, e = traffic.get(stratum, 0), in_set.get(stratum, 0)
        table.append({"stratum": stratum, "records": t, "traffic_share": t / total if total else 0.0,
                      "examples": e, "set_share": e / n if n else 0.0,
                      "ratio": (e / n) / (t / total) if n and t and total else None})
    failure_traffic = sum(1 for r in records if failure_signals(r)) / total if total else 0.0
    failure_set = sum(1 for e in examples if e.get("failure_signals")) / n if n else 0.0
    summary = {"strata": len(traffic), "strata_covered": sum(1 for s in traffic if in_set.get(s)),
               "strata_not_covered": sorted(s for s in traffic if not in_set.get(s)),
               "examples": n, "failure_share_traffic": round(failure_traffic, 4),
               "failure_share_set": round(failure_set, 4),
               "examples_from_strata_not_seen_this_month": sum(v for s, v in in_set.items() if s not in traffic)}
    return table, summary


def plot_coverage(table: Sequence[Mapping[str, Any]], title: str, max_bars: int = 25) -> bytes:
    """PNG: share of the set against share of traffic, for the largest strata."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = [r for r in table if r["records"]][:max_bars]
    fig = Figure(figsize=(10, 5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(rows))
    ax.bar(x - 0.2, [100 * r["traffic_share"] for r in rows], width=0.4, label="share of traffic", color="#9ab")
    ax.bar(x + 0.2, [100 * r["set_share"] for r in rows], width=0.4, label="share of the eval set", color="#e74")
    ax.set_xticks(x)
    ax.set_xticklabels([r["stratum"][:18] for r in rows], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("%")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def with_removed_in(rows: Sequence[Mapping[str, Any]], changelog: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The rows of one version with ``removed_in`` filled from the changelog of later versions
    (the first version that removed the example), so an exported old version says what became of it."""
    version = rows[0]["eval_set_version"] if rows else None
    removed: dict[str, str] = {}
    for change in sorted(changelog, key=lambda c: version_number(c["eval_set_version"])):
        if change["action"] == "removed" and version_number(change["eval_set_version"]) > version_number(version):
            removed.setdefault(change["example_id"], change["eval_set_version"])
    return [{**row, "removed_in": removed.get(row["example_id"])} for row in rows]


def export_rows(rows: Sequence[Mapping[str, Any]], fmt: str, path: str | Path) -> Path:
    """Write a self-contained file: JSON Lines (nested fields as JSON), Parquet (nested types
    kept), or CSV (nested fields as JSON text). Returns the path written."""
    import polars as pl

    from eval_pipeline.lib.storage.tables import EVAL_SET_SCHEMA

    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"format must be one of {', '.join(EXPORT_FORMATS)}, not {fmt!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    df = pl.DataFrame(list(rows), schema=EVAL_SET_SCHEMA).drop("month_start")
    if fmt == "parquet":
        df.write_parquet(path)
    elif fmt == "jsonl":
        with open(path, "w", encoding="utf-8") as handle:
            for row in df.iter_rows(named=True):
                row["slice"] = json.loads(row["slice"]) if row["slice"] else None
                handle.write(json.dumps(row, default=_json_default, ensure_ascii=False) + "\n")
    else:
        nested = [c for c, t in df.schema.items() if isinstance(t, (pl.List, pl.Struct))]
        flat = df.with_columns([pl.Series(c, [json.dumps(v, ensure_ascii=False) for v in df[c].to_list()]) for c in nested])
        flat.write_csv(path)
    return path


def _json_default(value: Any) -> Any:
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def outcomes_by_stratum(scores: Sequence[Mapping[str, Any]], examples: Sequence[Mapping[str, Any]]) -> dict[str, tuple[int, int]]:
    """stratum -> (passed, scored) of a model's scores (``example_id``, ``status``) on a version's
    ``examples`` (``example_id``, ``stratum``): the last scorecard's outcomes per stratum, which
    the refresh's Neyman allocation weighs by."""
    stratum = {ex["example_id"]: ex["stratum"] for ex in examples}
    out: dict[str, list[int]] = {}
    for row in scores:
        key = stratum.get(row["example_id"])
        if key is None or row["status"] not in ("passed", "failed"):
            continue
        counts = out.setdefault(key, [0, 0])
        counts[0] += row["status"] == "passed"
        counts[1] += 1
    return {k: (v[0], v[1]) for k, v in out.items()}


def slice_precision(before: Sequence[Mapping[str, Any]], after: Sequence[Mapping[str, Any]],
                    scores: Sequence[Mapping[str, Any]], slices: Sequence[str], slice_keys: Sequence[str],
                    confidence: float = 0.95) -> list[dict[str, Any]]:
    """Per slice (``slices``, e.g. the critical ones of the thresholds file): examples before and
    after a refresh, the last pass rate on the version before (``scores``: ``example_id``,
    ``status``), and the Wilson interval half-width expected at that rate with the examples
    before and after (:func:`sampling.half_width`)."""
    from eval_pipeline.lib.evaluation.gates import slice_names
    from eval_pipeline.lib.sampling.draw import half_width

    def members(rows: Sequence[Mapping[str, Any]], name: str) -> set[str]:
        return {r["example_id"] for r in rows if name in slice_names(r.get("slice"), slice_keys)}

    status = {r["example_id"]: r["status"] for r in scores if r["status"] in ("passed", "failed")}
    out = []
    for name in slices:
        old, new = members(before, name), members(after, name)
        scored = [status[e] == "passed" for e in old if e in status]
        rate = sum(scored) / len(scored) if scored else None
        out.append({"slice": name, "examples_before": len(old), "examples_after": len(new), "last_rate": rate,
                    "scored": len(scored),
                    "half_width_before": half_width(rate, len(old), confidence) if rate is not None else None,
                    "half_width_after": half_width(rate, len(new), confidence) if rate is not None else None})
    return out
