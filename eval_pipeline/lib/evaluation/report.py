"""A scorecard as one self-contained HTML page: verdict, counts, a pass-rate chart and the slice table.

The page needs nothing but itself: the CSS is inline, the chart is inline SVG, there is no
JavaScript, and no font, image, stylesheet or link points anywhere else, so the file can be
attached to a review, archived next to the eval set, or opened offline and printed.

Every value taken from the scorecard is passed through :func:`html.escape` before it reaches the
page (slice names and reasons come from data, and data can contain markup).

The header states the eval-set version the candidate was scored on and, with a baseline, the
one the baseline's scores are on, with the comparison's summary (shared examples, and those in
one run only); a comparison that does not pair every example is highlighted.

Formatting conventions: rates and limits as percentages with one decimal (``87.5%``),
differences as signed percentage points (``-9.5 pts``), p-values with three significant digits,
and a missing value (``None``) as an en dash.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["render_scorecard_html", "write_scorecard_report"]

MISSING = "\u2013"  # en dash, for None

_VERDICT_CLASSES = {"pass": "pass", "fail": "fail", "inconclusive": "inconclusive"}
_STATUS_LABELS = {
    "pass": "pass",
    "fail": "fail",
    "inconclusive": "inconclusive",
    "not_scored": "not scored",
    "not_gated": "not gated",
}

# Chart geometry, in SVG user units (the SVG scales to the page width).
_CHART_WIDTH = 960
_LABEL_WIDTH = 250
_PLOT_LEFT = _LABEL_WIDTH + 20
_PLOT_RIGHT = _CHART_WIDTH - 30
_AXIS_TOP = 30
_ROW_HEIGHT = 30
_BASELINE_OFFSET = 7  # the baseline's dot sits this far below the candidate's
_MAX_LABEL_CHARS = 34

_CSS = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body {
  margin: 0; padding: 24px 32px 48px; color: #1d232b; background: #fff;
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
}
main { max-width: 1320px; margin: 0 auto; }
h1 { font-size: 24px; margin: 0 0 12px; }
h2 { font-size: 17px; margin: 28px 0 8px; }
.num { font-variant-numeric: tabular-nums; }
.muted { color: #5b6673; }
.verdict { border-radius: 6px; padding: 12px 16px; margin: 0 0 16px; border: 1px solid; }
.verdict strong { font-size: 18px; letter-spacing: 0.02em; text-transform: uppercase; }
.verdict ul { margin: 6px 0 0; padding-left: 20px; }
.verdict-pass { background: #e7f5eb; border-color: #2e8b4e; color: #15432a; }
.verdict-fail { background: #fbe9e9; border-color: #c62f2f; color: #5e1414; }
.verdict-inconclusive { background: #fdf4de; border-color: #c98a00; color: #5a3d00; }
.verdict-unknown { background: #eef0f3; border-color: #7a8491; color: #2b323b; }
.meta, .counts { margin: 4px 0; }
.comparison { margin: 8px 0; padding: 6px 10px; border-left: 4px solid #98a1ab; background: #f5f7f9; }
.comparison-partial { border-left-color: #c98a00; background: #fdf4de; color: #5a3d00; }
.comparison p { margin: 2px 0; }
.meta span + span::before, .counts span + span::before { content: " \\00b7  "; color: #98a1ab; }
.headline { display: flex; flex-wrap: wrap; gap: 12px 32px; margin: 14px 0 6px; }
.headline div { min-width: 240px; }
.headline .big { font-size: 22px; font-weight: 600; }
figure { margin: 8px 0 0; }
figure svg { width: 100%; height: auto; display: block; }
svg text { font-family: inherit; font-size: 13px; fill: #1d232b; }
svg .axis-label { font-size: 11px; fill: #5b6673; }
svg .grid { stroke: #e1e5ea; stroke-width: 1; }
svg .grid-major { stroke: #c4cad2; }
svg .band { fill: #f5f7f9; }
svg .whisker-candidate { stroke: #1f5fbf; stroke-width: 2.5; }
svg .marker-candidate, svg .legend-candidate { fill: #1f5fbf; }
svg .whisker-baseline { stroke: #b55d00; stroke-width: 2; stroke-dasharray: 4 2; }
svg .marker-baseline, svg .legend-baseline { fill: #fff; stroke: #b55d00; stroke-width: 2; }
svg .floor, svg .legend-floor { stroke: #a01818; stroke-width: 2.5; }
svg .not-scored { font-style: italic; fill: #7a8491; }
svg .row-overall { font-weight: 600; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { padding: 5px 7px; border-bottom: 1px solid #e1e5ea; text-align: left; vertical-align: top; }
th { background: #f2f4f7; font-weight: 600; }
td.num, th.num { text-align: right; }
td.num { white-space: nowrap; }
tr.overall td { font-weight: 600; background: #fafbfc; }
.ci { color: #5b6673; font-size: 12px; }
td .ci { display: block; }
td.detail { min-width: 160px; }
.table-wrap { overflow-x: auto; }
.badge {
  display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px; font-weight: 600;
  white-space: nowrap; border: 1px solid;
}
.badge-pass { background: #e7f5eb; color: #15432a; border-color: #2e8b4e; }
.badge-fail { background: #fbe9e9; color: #5e1414; border-color: #c62f2f; }
.badge-inconclusive { background: #fdf4de; color: #5a3d00; border-color: #c98a00; }
.badge-not_scored { background: #eef0f3; color: #3a424c; border-color: #98a1ab; }
.badge-not_gated { background: #fff; color: #5b6673; border-color: #c4cad2; }
.note { margin: 6px 0; }
tr.flagged td { background: #fdf4de; }
.note ul { margin: 4px 0; padding-left: 20px; }
@page { size: A4 landscape; margin: 12mm; }
@media print {
  body { padding: 0; font-size: 11px; }
  main { max-width: none; }
  * { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  figure, .verdict, tr { break-inside: avoid; }
  table { font-size: 10px; }
  .table-wrap { overflow: visible; }
  h2 { break-after: avoid; }
}
"""


# --------------------------------------------------------------------------- formatting


def _esc(value: Any) -> str:
    """Escape any value for HTML text or a quoted attribute; ``None`` becomes the en dash."""
    return html.escape(MISSING if value is None else str(value))


def _pct(value: float | None) -> str:
    return MISSING if value is None else f"{value * 100:.1f}%"


def _pts(value: float | None) -> str:
    """A signed difference in percentage points."""
    return MISSING if value is None else f"{value * 100:+.1f} pts"


def _p_value(value: float | None) -> str:
    return MISSING if value is None else f"{value:#.3g}"


def _count(value: int | None) -> str:
    return MISSING if value is None else f"{value:,}"


def _interval(low: float | None, high: float | None, fmt=_pct) -> str:
    if low is None or high is None:
        return ""
    return f"[{fmt(low)}, {fmt(high)}]"


def _rate_cell(rate: float | None, low: float | None, high: float | None, fmt=_pct) -> str:
    """A rate with its interval underneath in small type (both escaped)."""
    if rate is None:
        return _esc(MISSING)
    interval = _interval(low, high, fmt)
    ci = f' <span class="ci">{_esc(interval)}</span>' if interval else ""
    return f"{_esc(fmt(rate))}{ci}"


def _difference_cell(paired: Mapping[str, Any]) -> str:
    """``-9.5 pts`` over ``[-16.0, -3.9]``: the interval in the same points, without repeating the unit."""
    difference = paired.get("difference")
    if difference is None:
        return _esc(MISSING)
    low, high = paired.get("low"), paired.get("high")
    if low is None or high is None:
        return _esc(_pts(difference))
    interval = f"[{low * 100:+.1f}, {high * 100:+.1f}]"
    n = paired.get("n")
    paired_n = f' <span class="ci">{_esc(_count(n))} paired</span>' if n is not None else ""
    return f'{_esc(_pts(difference))} <span class="ci">{_esc(interval)}</span>{paired_n}'


def _short(label: str, limit: int = _MAX_LABEL_CHARS) -> str:
    """Cut a long label to ``limit`` characters with an ellipsis (the chart keeps the full name in a tooltip)."""
    return label if len(label) <= limit else label[: limit - 1] + "\u2026"


# --------------------------------------------------------------------------- chart


def _x(rate: float) -> float:
    """Horizontal position of a rate in [0, 1] (clamped, so a bad value cannot leave the plot)."""
    rate = min(max(float(rate), 0.0), 1.0)
    return round(_PLOT_LEFT + rate * (_PLOT_RIGHT - _PLOT_LEFT), 2)


def _whisker(y: float, low: float | None, high: float | None, css: str) -> str:
    if low is None or high is None:
        return ""
    x1, x2 = _x(low), _x(high)
    cap = 4
    return (
        f'<line class="{css}" x1="{x1}" y1="{y}" x2="{x2}" y2="{y}"/>'
        f'<line class="{css}" x1="{x1}" y1="{y - cap}" x2="{x1}" y2="{y + cap}"/>'
        f'<line class="{css}" x1="{x2}" y1="{y - cap}" x2="{x2}" y2="{y + cap}"/>'
    )


def _diamond(x: float, y: float, size: float = 5.5) -> str:
    return f"M{x} {round(y - size, 2)} L{round(x + size, 2)} {y} L{x} {round(y + size, 2)} L{round(x - size, 2)} {y} Z"


def _chart_row(index: int, row: Mapping[str, Any], *, is_overall: bool) -> str:
    top = _AXIS_TOP + index * _ROW_HEIGHT
    mid = top + _ROW_HEIGHT / 2
    name = "overall" if is_overall else str(row.get("slice"))
    baseline = row.get("baseline")
    has_baseline = baseline is not None and baseline.get("rate") is not None
    y_candidate = mid - _BASELINE_OFFSET / 2 if has_baseline else mid
    y_baseline = y_candidate + _BASELINE_OFFSET

    parts = [f'<g class="row" data-slice="{_esc(name)}">']
    label_class = ' class="row-overall"' if is_overall else ""
    parts.append(
        f'<text{label_class} x="{_LABEL_WIDTH}" y="{mid + 4}" text-anchor="end">'
        f"<title>{_esc(name)}</title>{_esc(_short(name))}</text>"
    )
    floor = row.get("floor")
    if floor is not None:
        fx = _x(floor)
        parts.append(
            f'<line class="floor" x1="{fx}" y1="{top + 5}" x2="{fx}" y2="{top + _ROW_HEIGHT - 5}">'
            f"<title>{_esc(f'{name}: floor {_pct(floor)}')}</title></line>"
        )
    if row.get("scored") and row.get("rate") is not None:
        rate = row["rate"]
        parts.append(_whisker(y_candidate, row.get("low"), row.get("high"), "whisker-candidate"))
        tip = f"{name}: {_pct(rate)} {_interval(row.get('low'), row.get('high'))}".rstrip()
        parts.append(
            f'<circle class="marker-candidate" data-slice="{_esc(name)}" cx="{_x(rate)}" cy="{y_candidate}" r="5">'
            f"<title>{_esc(tip)}</title></circle>"
        )
    else:
        parts.append(f'<text class="not-scored" x="{_PLOT_LEFT + 6}" y="{mid + 4}">not scored</text>')
    if has_baseline:
        b_rate = baseline["rate"]
        parts.append(_whisker(y_baseline, baseline.get("low"), baseline.get("high"), "whisker-baseline"))
        tip = f"{name} baseline: {_pct(b_rate)} {_interval(baseline.get('low'), baseline.get('high'))}".rstrip()
        parts.append(
            f'<path class="marker-baseline" data-slice="{_esc(name)}" d="{_diamond(_x(b_rate), y_baseline)}">'
            f"<title>{_esc(tip)}</title></path>"
        )
    parts.append("</g>")
    return "".join(parts)


def _baseline_scope(scorecard: Mapping[str, Any]) -> str:
    """`` (v2, shared examples)`` after the baseline's name when its dots are not over the same examples."""
    comparison = scorecard.get("comparison")
    if not comparison or _all_shared(comparison):
        return ""
    return f" ({comparison.get('baseline_version') or 'no scores'}, shared examples)"


def _legend(scorecard: Mapping[str, Any], top: float, *, baseline: bool, floor: bool) -> tuple[str, float]:
    """The legend below the plot, wrapped onto further lines when the labels are long.

    Returns:
        The SVG of the legend and the height it takes.
    """
    # (mark drawn at x, y; label; width of the mark before the label)
    entries = [
        (lambda x, y: f'<line class="whisker-candidate" x1="{x}" y1="{y}" x2="{x + 28}" y2="{y}"/>'
                      f'<circle class="legend-candidate" cx="{x + 14}" cy="{y}" r="5"/>',
         _short(f"candidate {scorecard.get('model')}", 56), 36),
    ]
    if baseline:
        entries.append(
            (lambda x, y: f'<line class="whisker-baseline" x1="{x}" y1="{y}" x2="{x + 28}" y2="{y}"/>'
                          f'<path class="legend-baseline" d="{_diamond(x + 14, y)}"/>',
             _short(f"baseline {scorecard.get('baseline')}" + _baseline_scope(scorecard), 56), 36))
    if floor:
        entries.append(
            (lambda x, y: f'<line class="legend-floor" x1="{x + 6}" y1="{y - 8}" x2="{x + 6}" y2="{y + 8}"/>',
             "floor", 16))
    line_height = 22
    x, y = float(_PLOT_LEFT), top + 20
    parts = [
        '<g class="legend">',
        f'<text class="axis-label" x="{_LABEL_WIDTH}" y="{y + 4}" text-anchor="end">whiskers: 95% interval</text>',
    ]
    for mark, label, mark_width in entries:
        width = mark_width + 7.2 * len(label)  # about 7 units per character at 13px
        if x > _PLOT_LEFT and x + width > _CHART_WIDTH:
            x, y = float(_PLOT_LEFT), y + line_height
        parts.append(mark(x, y))
        parts.append(f'<text x="{x + mark_width}" y="{y + 4}">{_esc(label)}</text>')
        x += width + 28
    parts.append("</g>")
    return "".join(parts), y - top + 20


def _chart(scorecard: Mapping[str, Any]) -> str:
    rows = [scorecard["overall"], *scorecard["slices"]]
    plot_bottom = _AXIS_TOP + len(rows) * _ROW_HEIGHT
    any_baseline = any((r.get("baseline") or {}).get("rate") is not None for r in rows)
    any_floor = any(r.get("floor") is not None for r in rows)
    legend, legend_height = _legend(scorecard, plot_bottom, baseline=any_baseline, floor=any_floor)
    height = round(plot_bottom + legend_height + 6)

    compared = " and the baseline" if any_baseline else ""
    parts = [
        (
            f'<svg role="img" aria-labelledby="chart-title chart-desc" viewBox="0 0 {_CHART_WIDTH} {height}" '
            f'width="{_CHART_WIDTH}" height="{height}" preserveAspectRatio="xMinYMin meet">'
        ),
        '<title id="chart-title">Pass rate by slice</title>',
        (
            f'<desc id="chart-desc">Pass rate of each slice with its 95% interval, for the candidate{compared}, '
            "on a 0 to 100% axis.</desc>"
        ),
    ]
    # layers: alternate row bands, then the grid, then each row's marks on top
    for i in range(0, len(rows), 2):
        top = _AXIS_TOP + i * _ROW_HEIGHT
        parts.append(f'<rect class="band" x="0" y="{top}" width="{_CHART_WIDTH}" height="{_ROW_HEIGHT}"/>')
    for tenth in range(11):
        x = _x(tenth / 10)
        css = "grid grid-major" if tenth in (0, 5, 10) else "grid"
        parts.append(f'<line class="{css}" x1="{x}" y1="{_AXIS_TOP - 4}" x2="{x}" y2="{plot_bottom}"/>')
        parts.append(
            f'<text class="axis-label" x="{x}" y="{_AXIS_TOP - 10}" text-anchor="middle">{tenth * 10}%</text>'
        )
    parts.extend(_chart_row(i, row, is_overall=(i == 0)) for i, row in enumerate(rows))
    parts.append(legend)
    parts.append("</svg>")
    return "".join(parts)


# --------------------------------------------------------------------------- page sections


def _verdict_banner(scorecard: Mapping[str, Any]) -> str:
    verdict = str(scorecard.get("verdict"))
    css = _VERDICT_CLASSES.get(verdict, "unknown")
    reasons: Sequence[str] = scorecard.get("reasons") or []
    items = "".join(f"<li>{_esc(reason)}</li>" for reason in reasons)
    body = f"<ul>{items}</ul>" if items else '<p class="muted">No reasons recorded.</p>'
    return (
        f'<section class="verdict verdict-{css}" id="verdict" role="status">'
        f"<strong>Verdict: {_esc(verdict)}</strong>{body}</section>"
    )


def _meta_line(scorecard: Mapping[str, Any]) -> str:
    items = [
        ("Eval set", scorecard.get("eval_set_version")),
        ("Tier", scorecard.get("tier")),
        ("Baseline", scorecard.get("baseline") or "none (first evaluation)"),
    ]
    if scorecard.get("baseline") and scorecard.get("comparison"):
        items.append(("Baseline's eval set", scorecard.get("baseline_eval_set_version") or "no scores"))
    items.append(("Created", scorecard.get("created_at")))
    return '<p class="meta">' + "".join(f"<span>{_esc(k)}: {_esc(v)}</span>" for k, v in items) + "</p>"


def _all_shared(comparison: Mapping[str, Any]) -> bool:
    """Every example the candidate was run on is in the baseline's run of the same eval-set version."""
    return bool(comparison.get("same_version") and comparison.get("shared_examples")
                and not comparison.get("candidate_only_examples"))


def _comparison_note(scorecard: Mapping[str, Any]) -> str:
    """Which eval-set versions were compared and on how many shared examples, in the header: a
    comparison across versions (or with examples on one side only) is highlighted, and says which
    figures are over the shared examples only."""
    comparison = scorecard.get("comparison")
    if not comparison:
        return ""
    partial = not _all_shared(comparison)
    body = f"<p><strong>Compared:</strong> {_esc(comparison.get('summary'))}</p>"
    if partial and comparison.get("shared_examples"):
        body += ('<p class="muted">Baseline rates, differences and McNemar p are over the paired examples (shared '
                 "by both runs and scored by both); pass rates are the candidate's, over all it scored.</p>")
    css = "comparison comparison-partial" if partial else "comparison"
    return f'<section class="{css}" id="comparison">{body}</section>'


def _counts_line(counts: Mapping[str, Any]) -> str:
    items = [
        ("examples", counts.get("examples")),
        ("scored", counts.get("scored")),
        ("passed", counts.get("passed")),
        ("failed", counts.get("failed")),
        ("not scored", counts.get("not_scored")),
        ("errors", counts.get("errors")),
    ]
    spans = "".join(f'<span><span class="num">{_esc(_count(v))}</span> {_esc(k)}</span>' for k, v in items)
    return f'<p class="counts">{spans}</p>'


def _headline(scorecard: Mapping[str, Any]) -> str:
    overall = scorecard["overall"]
    weighted = scorecard.get("weighted")
    overall_ci = _interval(overall.get("low"), overall.get("high"))
    blocks = [
        (
            '<div id="overall-rate"><div class="muted">Overall pass rate</div>'
            f'<div class="big num">{_esc(_pct(overall.get("rate")))}</div>'
            f'<div class="ci">{_esc("95% Wilson interval " + overall_ci if overall_ci else "no interval")}</div></div>'
        )
    ]
    if weighted:
        weighted_ci = _interval(weighted.get("low"), weighted.get("high"))
        n_eff = weighted.get("n_eff")
        extra = f"; effective n {n_eff:.1f}" if n_eff is not None else ""
        ci_text = f"95% interval {weighted_ci}{extra}" if weighted_ci else f"no interval{extra}"
        blocks.append(
            '<div id="weighted-rate"><div class="muted">Traffic-weighted pass rate</div>'
            f'<div class="big num">{_esc(_pct(weighted.get("estimate")))}</div>'
            f'<div class="ci">{_esc(ci_text)}</div></div>'
        )
    else:
        blocks.append(
            '<div id="weighted-rate"><div class="muted">Traffic-weighted pass rate</div>'
            f'<div class="big num">{_esc(MISSING)}</div><div class="ci">not available</div></div>'
        )
    blocks.append(
        '<div id="worst-slice"><div class="muted">Worst slice</div>'
        f'<div class="big">{_esc(scorecard.get("worst_slice"))}</div></div>'
    )
    return '<section class="headline">' + "".join(blocks) + "</section>"


_TABLE_HEADERS: list[tuple[str, bool]] = [
    ("Slice", False),
    ("Critical", False),
    ("Scored / examples", True),
    ("Pass rate [95% CI]", True),
    ("Baseline rate", True),
    ("Difference [95% CI]", True),
    ("McNemar p", True),
    ("Floor", True),
    ("Max drop", True),
    ("Status", False),
    ("Detail", False),
    ("MDE", True),
    ("Examples needed", True),
]


def _td(content: str, kind: bool | str) -> str:
    """A cell: ``True`` right-aligns a number, a string is a CSS class, ``False`` is plain."""
    if kind is True:
        return f'<td class="num">{content}</td>'
    return f'<td class="{kind}">{content}</td>' if kind else f"<td>{content}</td>"


def _table_row(row: Mapping[str, Any], *, is_overall: bool) -> str:
    name = "overall" if is_overall else row.get("slice")
    baseline = row.get("baseline") or {}
    paired = row.get("paired") or {}
    status = str(row.get("status"))
    p_value = paired.get("p_value")
    p_text = _esc(_p_value(p_value))
    if p_value is not None and paired.get("test"):
        p_text += f' <span class="ci">{_esc(paired["test"])}</span>'
    critical = row.get("critical")
    cells = [
        (f"{_esc(name)}", False),
        (_esc(MISSING if critical is None else ("yes" if critical else "no")), False),
        (f"{_esc(_count(row.get('scored')))} / {_esc(_count(row.get('examples')))}", True),
        (_rate_cell(row.get("rate"), row.get("low"), row.get("high")), True),
        (_rate_cell(baseline.get("rate"), baseline.get("low"), baseline.get("high")), True),
        (_difference_cell(paired), True),
        (p_text, True),
        (_esc(_pct(row.get("floor"))), True),
        (_esc(_pct(row.get("max_drop"))), True),
        (f'<span class="badge badge-{_esc(status)}">{_esc(_STATUS_LABELS.get(status, status))}</span>', False),
        (_esc(row.get("detail") or MISSING), "detail"),
        (_esc(_pct(row.get("mde"))), True),
        (_esc(_count(row.get("needed_examples"))), True),
    ]
    tds = "".join(_td(content, kind) for content, kind in cells)
    css = ' class="overall"' if is_overall else ""
    return f'<tr{css} data-slice="{_esc(name)}">{tds}</tr>'


def _slice_table(scorecard: Mapping[str, Any]) -> str:
    head = "".join(f'<th class="num">{_esc(h)}</th>' if num else f"<th>{_esc(h)}</th>" for h, num in _TABLE_HEADERS)
    rows = [_table_row(scorecard["overall"], is_overall=True)]
    rows += [_table_row(row, is_overall=False) for row in scorecard["slices"]]
    return (
        f'<div class="table-wrap"><table id="slices"><thead><tr>{head}</tr></thead>'
        f'<tbody>{"".join(rows)}</tbody></table></div>'
    )


def _not_scored_note(scorecard: Mapping[str, Any]) -> str:
    counts = scorecard["counts"]
    not_scored, errors = counts.get("not_scored") or 0, counts.get("errors") or 0
    if not not_scored and not errors:
        return '<p class="note">Every example was scored, with no errors.</p>'
    total = _count(counts.get("examples"))
    if not_scored and errors:
        what = (f"{_count(not_scored)} of {total} examples were not scored (no scorer applies) and the model gave "
                f"no output for {_count(errors)} (provider errors)")
    elif not_scored:
        what = f"{_count(not_scored)} of {total} examples were not scored (no scorer applies)"
    else:
        what = f"the model gave no output for {_count(errors)} of {total} examples (provider errors)"
    summary = (
        what[0].upper() + what[1:] + f". They are neither passes nor fails: pass rates and intervals count only the "
        f"{_count(counts.get('scored'))} scored examples, so a slice with such examples is measured on fewer cases "
        "than it holds."
    )
    affected = [
        row
        for row in scorecard["slices"]
        if (row.get("not_scored") or 0) or (row.get("errors") or 0)
    ]
    items = "".join(
        f"<li>{_esc(row.get('slice'))}: {_esc(_count(row.get('not_scored') or 0))} not scored, "
        f"{_esc(_count(row.get('errors') or 0))} errors</li>"
        for row in affected
    )
    listing = f"<ul>{items}</ul>" if items else ""
    return f'<div class="note"><p>{_esc(summary)}</p>{listing}</div>'


# --------------------------------------------------------------------------- judge reliability


def _signed(low: float | None, high: float | None) -> str:
    return MISSING if low is None or high is None else f"[{100 * low:+.1f}, {100 * high:+.1f}]"


def _shift_cell(value: float | None, low: float | None, high: float | None) -> str:
    if value is None:
        return _esc(MISSING)
    return f'{_esc(_pts(value))} <span class="ci">{_esc(_signed(low, high))}</span>'


_FLAGGED = ' class="flagged"'


def judge_reliability_section(scorecard: Mapping[str, Any]) -> str:
    """``<section id="judge-reliability">``: the judge bias probe table (shift with its 95%
    interval, McNemar p, miss rate of planted errors; flagged rows marked), the observed bias
    bins, and the gate warnings; a pointer to ``eval-pipeline probe-judge`` when there are none."""
    reliability = scorecard.get("judge_reliability")
    head = '<section id="judge-reliability"><h2>Judge reliability</h2>'
    if not reliability or not (reliability.get("probes") or reliability.get("observed")):
        return (head + '<p class="note">No probe results: run <code>eval-pipeline probe-judge</code> to measure '
                "how the judge reacts to length, hedging, confident framing and planted errors.</p></section>")
    parts = [head, f'<p class="note">Bias probes of the LLM judge ({_esc(reliability.get("month") or MISSING)}): '
             "the pass-rate shift when only the form of the output changes (or one fact is planted wrong), paired "
             "per example; flagged rows are marked. Warnings only: the verdict does not depend on them.</p>"]
    rows = []
    for r in reliability.get("probes") or []:
        flagged = bool(r.get("flagged"))
        miss = (MISSING if r.get("miss_rate") is None
                else f"{_pct(r['miss_rate'])} {_interval(r.get('miss_low'), r.get('miss_high'))}")
        cells = [_esc(r.get("probe")), _esc(f"{r.get('group')}.{r.get('criterion') or MISSING}"),
                 _esc(_count(r.get("pairs"))), _esc(_pct(r.get("original_rate"))), _esc(_pct(r.get("variant_rate"))),
                 _shift_cell(r.get("shift"), r.get("low"), r.get("high")), _esc(_p_value(r.get("p_value"))),
                 _esc(miss), "flagged" if flagged else "", _esc(r.get("note") or "")]
        rows.append(f"<tr{_FLAGGED if flagged else ''}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    if rows:
        head_cells = ("Probe", "Criterion", "Pairs", "Original", "Variant", "Shift [95% CI]", "McNemar p",
                      "Planted errors passed [95% CI]", "Flag", "Note")
        parts.append('<div class="table-wrap"><table id="judge-probes"><thead><tr>'
                     + "".join(f"<th>{_esc(h)}</th>" for h in head_cells) + "</tr></thead><tbody>"
                     + "".join(rows) + "</tbody></table></div>")
    observed = [r for r in reliability.get("observed") or [] if r.get("pairs")]
    if observed:
        items = "".join(
            f"<tr{_FLAGGED if r.get('flagged') else ''}><td>{_esc(r.get('dimension'))}</td>"
            f"<td>{_esc(r.get('bin'))}</td><td>{_esc(r.get('group'))}.{_esc(r.get('criterion'))}</td>"
            f"<td>{_esc(_count(r.get('pairs')))}</td><td>{_shift_cell(r.get('difference'), r.get('low'), r.get('high'))}"
            f"</td><td>{'flagged' if r.get('flagged') else ''}</td></tr>" for r in observed)
        parts.append("<h3>Observed bias: judge minus human majority</h3>"
                     '<div class="table-wrap"><table id="judge-observed"><thead><tr><th>By</th><th>Bin</th>'
                     "<th>Criterion</th><th>Pairs</th><th>Difference [95% CI]</th><th>Flag</th></tr></thead>"
                     f"<tbody>{items}</tbody></table></div>")
    warnings = scorecard.get("warnings") or []
    if warnings:
        parts.append('<ul class="judge-warnings">' + "".join(f"<li>{_esc(w)}</li>" for w in warnings) + "</ul>")
    else:
        parts.append('<p class="note">No gate warned: no gate is scored by the judge with a flagged required criterion.</p>')
    return "".join(parts) + "</section>"
def _human_review_section(scorecard: Mapping[str, Any]) -> str:
    """Counts of the failures' human review and the overturned examples; empty when none was sent."""
    review = scorecard.get("human_review")
    if not review:
        return ""
    c = review["counts"]
    text = (f"{_count(c['failures'])} failures sent for review: {_count(c['reviewed'])} reviewed, "
            f"{_count(c['confirmed'])} confirmed, {_count(c['overturned'])} overturned, "
            f"{_count(c['awaiting_review'])} awaiting review"
            + (f", {_count(c['no_rubric'])} with no rubric (not sent)" if c.get("no_rubric") else "")
            + ". An overturned example counts as passed in every "
            "rate above, the paired comparison with the baseline included.")
    items = "".join(f"<li><code>{_esc(o['example_id'])}</code>: {_esc(o.get('note') or '')}</li>"
                    for o in review.get("overturned") or [])
    listing = f"<p>Overturned:</p><ul>{items}</ul>" if items else ""
    return (f'<section id="human-review"><h2>Human review of failures</h2>'
            f'<div class="note"><p>{_esc(text)}</p>{listing}</div></section>')


# --------------------------------------------------------------------------- public API


def render_scorecard_html(scorecard: dict) -> str:
    """Render a scorecard as a complete, self-contained HTML document.

    Args:
        scorecard: The scorecard dict of the evaluation gate (model, baseline, verdict, reasons,
            counts, overall, weighted, worst_slice, slices; with a baseline, comparison and
            baseline_eval_set_version), as ``lib/evaluation/gates.py`` builds it.

    Returns:
        The HTML page as a string: inline CSS and SVG only, no scripts and no external resources.
    """
    model = scorecard.get("model")
    title = f"Scorecard: {model}"
    body = [
        f"<h1>{_esc(title)}</h1>",
        _verdict_banner(scorecard),
        _meta_line(scorecard),
        _comparison_note(scorecard),
        _counts_line(scorecard["counts"]),
        _headline(scorecard),
        "<h2>Pass rate by slice</h2>",
        f'<figure id="chart">{_chart(scorecard)}</figure>',
        "<h2>Slices</h2>",
        _slice_table(scorecard),
        "<h2>Not scored / errors</h2>",
        _not_scored_note(scorecard),
        judge_reliability_section(scorecard),
        _human_review_section(scorecard),
    ]
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n"
        "<body>\n<main>\n" + "\n".join(body) + "\n</main>\n</body>\n</html>\n"
    )


def write_scorecard_report(scorecard: dict, path: str | Path) -> Path:
    """Write :func:`render_scorecard_html` of ``scorecard`` to ``path`` (UTF-8), creating parent folders.

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_scorecard_html(scorecard), encoding="utf-8")
    return path
