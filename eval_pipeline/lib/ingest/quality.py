"""Data-quality suites (Great Expectations) for the ingest tables.

Each suite runs on an ephemeral GX context over pandas frames (GX has no polars source) and
returns a plain :class:`SuiteResult` that a Dagster asset check turns into its verdict. A process
keeps one context and one batch definition per table (the frame is passed at each validation, as
GX's whole-dataframe batches take it): making them anew for each suite took about half of a small
day's validation (GX writes its project settings out at every change of a new context).
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import pandas as pd
import polars as pl

from eval_pipeline.lib.ingest.records import ROLES

__all__ = ["ExpectationOutcome", "SUITE_COLUMNS", "SuiteResult", "validate_raw_logs"]

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


@dataclass(frozen=True)
class ExpectationOutcome:
    """One expectation's verdict with up to a few offending values."""

    table: str
    expectation: str
    column: str
    success: bool
    unexpected_count: int
    examples: list[Any] = field(default_factory=list)


@dataclass
class SuiteResult:
    """All expectations of a suite."""

    outcomes: list[ExpectationOutcome]

    @property
    def success(self) -> bool:
        return all(o.success for o in self.outcomes)

    @property
    def failed(self) -> list[ExpectationOutcome]:
        return [o for o in self.outcomes if not o.success]

    def markdown(self) -> str:
        lines = ["| table | expectation | column | ok | unexpected | examples |", "|---|---|---|---|---|---|"]
        for o in self.outcomes:
            examples = ", ".join(repr(e) for e in o.examples[:3]).replace("|", "/")
            lines.append(f"| {o.table} | {o.expectation} | {o.column} | {'yes' if o.success else 'NO'} | {o.unexpected_count} | {examples} |")
        return "\n".join(lines)


_lock = threading.Lock()  # one validation at a time on the process's context
_context: Any = None  # the process's ephemeral GX context, made on first use
_batches: dict[str, Any] = {}  # table -> its whole-dataframe batch definition in that context


def _batch_definition(table: str) -> Any:
    """The process's GX batch definition of ``table`` (call under ``_lock``)."""
    global _context
    import great_expectations as gx

    if _context is None:
        logging.getLogger("great_expectations").setLevel(logging.ERROR)
        _context = gx.get_context(mode="ephemeral")
        _context.variables.progress_bars = {"globally": False}
    if table not in _batches:
        _batches[table] = _context.data_sources.add_pandas(f"{table}_source").add_dataframe_asset(table) \
            .add_batch_definition_whole_dataframe("whole")
    return _batches[table]


def _run(table: str, df: pd.DataFrame, expectations: list[Any]) -> list[ExpectationOutcome]:
    import great_expectations as gx

    suite = gx.ExpectationSuite(name=f"{table}_suite", expectations=expectations)
    with _lock:
        result = _batch_definition(table).get_batch(batch_parameters={"dataframe": df}).validate(suite)
    outcomes = []
    for r in result.results:
        cfg = r.expectation_config
        outcomes.append(
            ExpectationOutcome(
                table=table,
                expectation=cfg.type,
                column=str(cfg.kwargs.get("column", "")),
                success=bool(r.success),
                unexpected_count=int(r.result.get("unexpected_count") or 0),
                examples=list(r.result.get("partial_unexpected_list") or [])[:5],
            )
        )
    return outcomes


# What the suite reads of a stored raw_logs partition (DuckDB SQL): its key and number fields,
# and of the messages and retrieved chunks only the role and the score, not their text.
SUITE_COLUMNS = ("request_id", "timestamp", "latency_ms", "turn_index",
                 "list_transform(messages, m -> struct_pack(role := m.role)) as messages",
                 "list_transform(retrieved_chunks, c -> struct_pack(score := c.score)) as retrieved_chunks")


def validate_raw_logs(frame: pl.DataFrame, day: date) -> SuiteResult:
    """The ``raw_logs`` suite for one day's partition: a frame of the ``raw_logs`` layout, or of
    :data:`SUITE_COLUMNS` read from the stored table.

    Ids unique and non-null, timestamps inside the day, message roles valid, latency >= 0,
    turn index >= 0, retrieval scores in [0, 1].
    """
    import great_expectations as gx

    start = datetime(day.year, day.month, day.day)
    end = start + timedelta(days=1) - timedelta(microseconds=1)
    records = frame.select("request_id", "timestamp", "latency_ms", "turn_index").to_pandas()
    messages = (
        frame.select(pl.col("messages").explode().struct.field("role").alias("role")).drop_nulls().to_pandas()
        if frame.height else pd.DataFrame({"role": pd.Series([], dtype="object")})
    )
    chunks = (
        frame.select(pl.col("retrieved_chunks").explode().struct.field("score").alias("score")).drop_nulls().to_pandas()
        if frame.height else pd.DataFrame({"score": pd.Series([], dtype="float64")})
    )
    E = gx.expectations
    outcomes = _run("records", records, [
        E.ExpectColumnValuesToNotBeNull(column="request_id"),
        E.ExpectColumnValuesToBeUnique(column="request_id"),
        E.ExpectColumnValuesToNotBeNull(column="timestamp"),
        E.ExpectColumnValuesToBeBetween(column="timestamp", min_value=start, max_value=end),
        E.ExpectColumnValuesToBeBetween(column="latency_ms", min_value=0),
        E.ExpectColumnValuesToBeBetween(column="turn_index", min_value=0),
    ])
    outcomes += _run("message_roles", messages, [E.ExpectColumnValuesToBeInSet(column="role", value_set=list(ROLES))])
    outcomes += _run("chunk_scores", chunks, [E.ExpectColumnValuesToBeBetween(column="score", min_value=0, max_value=1)])
    return SuiteResult(outcomes)
