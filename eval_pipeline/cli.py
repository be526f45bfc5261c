"""The ``eval-pipeline`` command line."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time
import warnings
from datetime import date
from pathlib import Path

__all__ = ["EXIT_BUSY", "main"]

# ``refresh`` and ``demo``: another refresh of the same data home is running (nothing was done)
EXIT_BUSY = 3


def _home(args: argparse.Namespace):
    """The data home ``--home`` (or ``EVAL_PIPELINE_HOME``) names, as it is: nothing is created
    here. The commands that run Dagster get its folders from :func:`check_home` before they start;
    the others create only what they write (the registry file, the labels inbox), and the ones
    that only read (``export-eval-set``, ``labels push``) create nothing."""
    from eval_pipeline.lib.core.paths import DataHome

    return DataHome.resolve(args.home)


def cmd_generate_logs(args: argparse.Namespace) -> int:
    from eval_pipeline.demo.logs import generate_logs

    summary = generate_logs(Path(args.out), date.fromisoformat(args.start), args.days, args.per_day, args.seed,
                            truth_dir=Path(args.truth) if args.truth else None)
    print(summary)
    return 0


def cmd_validate_logs(args: argparse.Namespace) -> int:
    from eval_pipeline.lib.ingest.ingestion import REASONS, validate_files

    paths = []
    for name in args.files:
        path = Path(name)
        if path.is_dir():
            paths += sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        elif path.exists():
            paths.append(path)
        else:
            print(f"{name}: no such file", file=sys.stderr)
            return 2
    report = validate_files(paths, fmt=args.format, max_line_bytes=args.max_line_bytes)
    print(f"{report.files} files, {report.records} records: {report.valid} valid, {len(report.errors)} invalid"
          + (f" ({report.skipped_spans} non-LLM spans skipped)" if report.skipped_spans else ""))
    for reason, count in report.reason_counts.items():
        print(f"  {reason:<18} {count:>7}  {REASONS.get(reason, '')}")
    for outcome in report.errors[: args.max_errors]:
        where = f"{outcome.source_file}:{outcome.line}" + (f" span {outcome.index}" if outcome.index else "")
        print(f"{where}: {outcome.reason}: {outcome.message}")
    if len(report.errors) > args.max_errors:
        print(f"... and {len(report.errors) - args.max_errors} more")
    return 0 if not report.errors else 1


def cmd_schema(args: argparse.Namespace) -> int:
    from eval_pipeline.lib.ingest.records import log_record_json_schema

    text = json.dumps(log_record_json_schema(), indent=2, sort_keys=True) + "\n"
    if args.out:
        Path(args.out).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _progress(args: argparse.Namespace):
    """The progress display ``--progress`` asks for (on stderr; None for ``none``) and the ``log``
    that writes the command's own lines to stdout without running into a live status line."""
    from eval_pipeline.lib.runs.progress import open_display

    display = open_display(args.progress)
    return display, (display.above if display else print)


def cmd_refresh(args: argparse.Namespace) -> int:
    from eval_pipeline.defs.resources import ClusteringSettings
    from eval_pipeline.runs import RefreshRunning, month_summary_lines, refresh_month

    home = _home(args)
    start = time.perf_counter()
    display, log = _progress(args)
    try:
        result = refresh_month(home, args.month, workers=args.workers, log=log, progress=display,
                               resources={"clustering": ClusteringSettings(refit=True)} if args.refit else None)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except RefreshRunning as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BUSY
    status = "ok" if result.success else f"FAILED: {', '.join(result.failed)}"
    skipped = f", {len(result.skipped)} skipped (no records)" if result.skipped else ""
    print(f"refresh {args.month}: {len(result.days)} days{skipped}, monthly jobs {result.monthly_jobs or 'none yet'}; "
          f"{status} ({time.perf_counter() - start:.0f} s)")
    for line in month_summary_lines(home, args.month):
        print(f"  {line}")
    return 0 if result.success else 1


def cmd_demo(args: argparse.Namespace) -> int:
    from eval_pipeline.demo.logs import generate_logs
    from eval_pipeline.demo.settings import THRESHOLDS, demo_resources
    from eval_pipeline.lib.evaluation.gates import scorecard_text
    from eval_pipeline.lib.storage.lake import StorageLocations
    from eval_pipeline.runs import (agreement_summary, changelog_summary, cluster_summary, day_pool,
                                    evaluate_model, month_days,
                                    pii_placeholders, quarantine_reasons, RefreshRunning, refresh_month, register_demo_models,
                                    run_labeling, simulate_demo_annotations, table_counts, month_summary_lines)

    home = _home(args)
    start = date.fromisoformat(args.start)
    months = []
    y, m = start.year, start.month
    for _ in range(args.months):
        months.append(f"{y:04d}-{m:02d}")
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    days = sum(len(month_days(month)) for month in months)
    began = time.perf_counter()
    print(f"data home: {home.root}")
    print(f"generating {args.months} months of demo logs ({days} days x {args.per_day} records) into {home.landing / 'demo'}")
    # the demo owns landing/demo: clear it so files of an earlier demo with other dates do not linger
    shutil.rmtree(home.landing / "demo", ignore_errors=True)
    generate_logs(home.landing / "demo", date.fromisoformat(f"{months[0]}-01"), days, args.per_day, args.seed,
                  truth_dir=home.demo_truth)
    ok = True
    display, log = _progress(args)
    # the demo's settings: its redaction allow-list (the bank's name, its assistant's vocabulary), its eval-set size
    resources = demo_resources(target_size=args.target_size)
    with day_pool(args.workers, home, resources) as pool:  # one set of worker processes (models loaded once) for every month
        for month in months:
            try:
                result = refresh_month(home, month, pool=pool, log=log, progress=display, resources=resources)
            except RefreshRunning as err:
                print(f"error: {err}", file=sys.stderr)
                return EXIT_BUSY
            ok &= result.success
            print(f"refresh {month}: {'ok' if result.success else 'FAILED: ' + ', '.join(result.failed)}")
            for line in month_summary_lines(home, month):
                print(f"  {line}")
    if ok:
        export = simulate_demo_annotations(home)
        labelled = run_labeling(home)
        ok &= labelled
        print(f"labels: three simulated annotators' Label Studio export -> {export.name}; "
              f"labeling {'ok' if labelled else 'FAILED'}")
    evaluations = []
    if ok:
        for key in register_demo_models(home):
            outcome = evaluate_model(home, key, tier="deep", thresholds=str(THRESHOLDS), log=log,
                                     progress=display)
            evaluations.append(outcome)
            ok &= outcome.error is None
            print(f"evaluated {key}: {outcome.error or outcome.scorecard['verdict']}")
    print("\nrows per table:")
    for table, count in table_counts(home).items():
        print(f"  {table:<32} {count:>8}")
    print("quarantined by reason:")
    for reason, count in quarantine_reasons(home).items():
        print(f"  {reason:<32} {count:>8}")
    print("PII placeholders in redacted_logs by type (the no_pii_leak check passed on every day):" if ok
          else "PII placeholders in redacted_logs by type:")
    for kind, count in pii_placeholders(home).items():
        print(f"  {kind:<32} {count:>8}")
    print("clusters per month (drift against the month before):")
    for month in cluster_summary(home):
        drift = ", ".join(f"{status} {count}" for status, count in month["drift"].items())
        continuing = ("" if month["mode"] == "initial" or month["continuing_share"] is None
                      else f"; {100 * month['continuing_share']:.1f}% of the traffic in continuing clusters")
        print(f"  {month['month']}: {month['clusters']} clusters, {month['unclustered']} of {month['records']} "
              f"records unclustered; {drift} ({month['mode']}){continuing}")
    print(f"  maps: {home.reports / 'clusters'}/YYYY-MM.png")
    print("\neval set versions (changelog; the full one is in "
          f"{home.reports / 'eval_set' / 'CHANGELOG.md'}):")
    print("  " + changelog_summary(home).replace("\n", "\n  "))
    print("  export one: .venv/bin/eval-pipeline export-eval-set --version latest --format jsonl --out eval_set.jsonl")
    print("\nannotator agreement per criterion (kappa for two annotators, alpha for more; flagged below 0.6):")
    for row in agreement_summary(home):
        value = "   n/a" if row["value"] is None else f"{row['value']:6.3f}"
        print(f"  {row['criterion']:<44} {row['method'] or '':<20} {value}  "
              f"{row['flags'] or (row['note'] if row['value'] is None else '') or ''}")
    print("  (the judge is skipped unless EVAL_PIPELINE_JUDGE_BASE_URL and EVAL_PIPELINE_JUDGE_MODEL are set)")
    for outcome in evaluations:
        if outcome.scorecard:
            print("\n" + scorecard_text(outcome.scorecard))
            print(f"  report: {outcome.report}")
    if evaluations:
        print("  (open-ended task types are not scored offline: set EVAL_PIPELINE_JUDGE_BASE_URL and "
              "EVAL_PIPELINE_JUDGE_MODEL to score them with the rubric judge)")
    print(f"\ndone in {time.perf_counter() - began:.0f} s. Look at it in the Dagster UI:")
    print(f"  EVAL_PIPELINE_HOME={home.root} .venv/bin/eval-pipeline ui    # then open http://127.0.0.1:3000")
    storage = StorageLocations.resolve()
    if storage.lake:
        print(f"the large tables are Parquet objects under {storage.main} (raw zone: {storage.raw}), one per day: "
              f".venv/bin/python -c \"import polars as pl; print(pl.scan_parquet('{storage.main}/privacy/redacted_logs/*.parquet').head(5).collect())\"")
    print(f"or query the tables: .venv/bin/python -c \"import duckdb; print(duckdb.connect('{home.warehouse}', read_only=True).sql('select * from sampling.eval_set limit 5'))\"")
    return 0 if ok else 1


def cmd_register_model(args: argparse.Namespace) -> int:
    from datetime import datetime, timezone

    from eval_pipeline.lib.registry.versions import ModelRegistry, ModelVersion, RegistryError

    home = _home(args)
    params = {}
    for item in args.param or []:
        key, sep, value = item.partition("=")
        if not sep:
            print(f"error: --param {item!r}: expected key=value, e.g. temperature=0", file=sys.stderr)
            return 2
        try:
            params[key] = json.loads(value) if value.replace(".", "", 1).isdigit() else value
        except ValueError:  # "٣" is a digit to isdigit() but not to JSON; 5000 digits are too long for int()
            print(f"error: --param {item!r}: {value[:40]!r} is not a number JSON can read", file=sys.stderr)
            return 2
    try:
        mv = ModelVersion(name=args.name, version=args.version, provider=args.provider, base_url=args.base_url,
                          model=args.model, api_key_env=args.api_key_env,
                          recorded_path=str(Path(args.recorded).resolve()) if args.recorded else None, params=params,
                          role="baseline" if args.baseline else "candidate", registered_at=datetime.now(timezone.utc),
                          description=args.description)
        ModelRegistry(home.registry).register(mv)
    except (RegistryError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # the registry file cannot be written (a folder in its place, no permission)
        print(f"error: {home.registry}: {err.strerror or err}", file=sys.stderr)
        return 1
    print(f"registered {mv.key} ({mv.role}, {mv.provider}) in {home.registry}")
    print(f"  the registry sensor evaluates it when `eval-pipeline ui` runs; or now: "
          f"eval-pipeline evaluate --model {mv.key}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from eval_pipeline.lib.evaluation.gates import scorecard_text
    from eval_pipeline.runs import evaluate_model

    home = _home(args)
    display, log = _progress(args)
    outcome = evaluate_model(home, args.model, baseline=args.baseline, tier=args.tier, thresholds=args.thresholds,
                             max_workers=args.workers, rescore_baseline=args.rescore_baseline, log=log,
                             progress=display)
    if outcome.error:
        print(f"error: {outcome.error}", file=sys.stderr)
        return outcome.exit_code
    print(scorecard_text(outcome.scorecard))
    print(f"\nreport: {outcome.report}")
    return outcome.exit_code


def _fmt(value, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def probe_text(outcome) -> str:
    """The probe table, the flags and the observed-bias bins that are flagged, as plain text."""
    lines = [f"judge bias probes, {outcome.month} (threshold {outcome.metadata.get('threshold', '-')}; "
             f"{outcome.metadata.get('sampled_examples', 0)} examples sampled)"]
    if outcome.metadata.get("skipped"):
        lines.append(f"  skipped: {outcome.metadata['skipped']}")
    header = f"  {'probe':<14} {'criterion':<38} {'pairs':>5}  {'orig':>5} {'var':>5} {'shift [95% CI]':<22} " \
             f"{'p':>6} {'miss':>5}  flag"
    lines += [header, "  " + "-" * (len(header) - 2)]
    for r in outcome.probes:
        shift = "-" if r["shift"] is None else f"{r['shift']:+.2f} [{r['low']:+.2f}, {r['high']:+.2f}]"
        lines.append(f"  {r['probe']:<14} {str(r['group']) + '.' + str(r['criterion']):<38} {r['pairs']:>5}  "
                     f"{_fmt(r['original_rate']):>5} {_fmt(r['variant_rate']):>5} {shift:<22} "
                     f"{_fmt(r['p_value'], '.3g'):>6} {_fmt(r['miss_rate']):>5}  {'FLAG' if r['flagged'] else ''}")
    flagged = [r for r in outcome.probes if r["flagged"]]
    lines += ["", "flags:" if flagged else "flags: none"]
    lines += [f"  - {r['probe']}: {r['group']}.{r['criterion']}: {r['note']}" for r in flagged]
    observed = [r for r in outcome.observed if r["flagged"]]
    lines.append(f"observed bias (judge vs human majority): {len(outcome.observed)} bins, {len(observed)} flagged")
    lines += [f"  - {r['group']}.{r['criterion']} {r['dimension']} {r['bin']}: {r['note']}" for r in observed]
    return "\n".join(lines)


def cmd_probe_judge(args: argparse.Namespace) -> int:
    from eval_pipeline.runs import probe_judge

    if args.sample < 1 or not 0 < args.threshold < 1:
        print("error: --sample must be at least 1 and --threshold between 0 and 1", file=sys.stderr)
        return 2
    outcome = probe_judge(_home(args), args.month, sample=args.sample, threshold=args.threshold)
    if outcome.error:
        print(f"error: {outcome.error}", file=sys.stderr)
        return 2
    print(probe_text(outcome))
    return 0
def cmd_review_failures(args: argparse.Namespace) -> int:
    from eval_pipeline.lib.evaluation.gates import human_review_lines
    from eval_pipeline.runs import review_failures

    home = _home(args)
    outcome = review_failures(home, args.model, baseline=args.baseline, thresholds=args.thresholds)
    if outcome.error:
        print(f"error: {outcome.error}", file=sys.stderr)
        return 2
    card = outcome.scorecard
    print(f"verdict: {card['verdict'].upper()}  {args.model} (re-issued with the reviewers' verdicts)")
    print("\n".join(human_review_lines(card)))
    if outcome.review_labels:
        counts, why = outcome.review_labels["counts"], outcome.review_labels["quarantined_because"]
        print(f"  labels in the inbox: {counts.get('read', 0)} read, {counts.get('accepted', 0)} accepted, "
              f"{counts.get('quarantined', 0)} quarantined"
              + (f" ({', '.join(f'{n} {r}' for r, n in sorted(why.items()))}; file, place and reason in the "
                 "failure_review asset's metadata)" if why else ""))
    print(f"  tasks: {home.failure_review(args.model) / 'tasks'}\n  inbox: {home.failure_review(args.model) / 'inbox'}")
    print(f"\nreport: {outcome.report}")
    return outcome.exit_code


def cmd_ui(args: argparse.Namespace) -> int:
    from eval_pipeline.lib.core.paths import HOME_ENV
    from eval_pipeline.runs import instance_for

    home = _home(args)
    instance_for(home)  # writes <home>/dagster/dagster.yaml
    # dagster dev (the program this process becomes) and the processes it starts find the data
    # home and the instance in their environment: set there, not in this process's os.environ
    env = {**os.environ, HOME_ENV: str(home.root), "DAGSTER_HOME": str(home.dagster_home)}
    workspace = Path(__file__).resolve().parent.parent / "workspace.yaml"
    target = ["-w", str(workspace)] if workspace.exists() else ["-m", "eval_pipeline.definitions"]
    dagster = Path(sys.executable).parent / "dagster"  # the venv's, whether or not it is activated
    os.execve(str(dagster), [str(dagster), "dev", *target, "--host", args.host, "--port", str(args.port)], env)


def cmd_move_to_lake(args: argparse.Namespace) -> int:
    import duckdb

    from eval_pipeline.lib.core.locks import file_lock
    from eval_pipeline.lib.storage.lake import STORAGE_ENV, Lake, StorageLocations, move_to_lake
    from eval_pipeline.lib.storage.spool import spool_dir

    home = _home(args)
    try:
        storage = StorageLocations.resolve()
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not storage.lake:
        print(f"error: {STORAGE_ENV} is not set: say where the large tables go (a folder or s3://bucket/prefix)",
              file=sys.stderr)
        return 2
    moved_any = False
    for path, url, zone in ((home.raw_warehouse, storage.raw, "raw"), (home.warehouse, storage.main, "main")):
        if not path.exists():
            continue
        try:
            with file_lock(f"{path}.lock"), duckdb.connect(str(path)) as con:
                moved = move_to_lake(con, Lake(url, restricted=zone == "raw"), zone, spool_dir(path))
        except (OSError, RuntimeError, ValueError, duckdb.Error) as err:
            print(f"error: {path}: {err}", file=sys.stderr)
            return 1
        for table, counts in moved.items():
            moved_any = True
            print(f"{table}: {sum(counts.values()):,} rows in {len(counts)} partitions -> {url}")
    if not moved_any:
        print(f"nothing to move: no large table is held in {home.root}'s DuckDB files")
    return 0


def cmd_redact(args: argparse.Namespace) -> int:
    from eval_pipeline.defs.resources import build_resources
    from eval_pipeline.lib.core.paths import DataHome
    from eval_pipeline.lib.privacy.redaction import redact_jsonl

    # the pipeline's own redaction settings (custom patterns, allow-list, entity types, threshold),
    # so a file redacted here reads as redacted_logs does; --score-threshold replaces the threshold.
    # The data home is only named (resources are bound to it), not created: nothing is written there.
    config = build_resources(DataHome.resolve(args.home))["redaction"].config()
    if args.score_threshold is not None:
        try:
            config = dataclasses.replace(config, score_threshold=args.score_threshold)
        except ValueError as err:
            print(f"error: --score-threshold: {err}", file=sys.stderr)
            return 2
    inp = open(args.input, encoding="utf-8") if args.input else sys.stdin
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    try:
        summary = redact_jsonl(inp, out, config=config)
    except ValueError as err:
        print(f"error: {args.input or '<stdin>'}: {err}", file=sys.stderr)
        return 1
    finally:
        if args.input:
            inp.close()
        if args.output:
            out.close()
    print(json.dumps(summary, sort_keys=True), file=sys.stderr)
    return 0


def cmd_export_eval_set(args: argparse.Namespace) -> int:
    from eval_pipeline.lib.sampling.eval_set import export_rows
    from eval_pipeline.runs import load_eval_set

    home = _home(args)
    try:
        name, rows = load_eval_set(home, args.version)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    path = export_rows(rows, args.format, args.out)
    removed = sum(1 for r in rows if r["removed_in"])
    print(f"eval set {name}: {len(rows)} examples written to {path} ({args.format})"
          + (f"; {removed} of them were removed in later versions (see removed_in)" if removed else ""))
    return 0


def cmd_power(args: argparse.Namespace) -> int:
    from eval_pipeline.lib.evaluation.stats import power_report

    try:
        print(power_report(args.baseline_rate, effect=args.effect, n=args.n, slice_share=args.slice_share,
                           alpha=args.alpha, power=args.power, discordance=args.discordance))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def _with_label_studio(args: argparse.Namespace, action) -> int:
    """Run ``action(connection, home)``: missing settings exit 2, a server or task-file error exits 1."""
    from eval_pipeline.lib.labeling.label_studio import Connection, LabelStudioError, TaskFileError

    try:
        conn = Connection.from_env()
    except LabelStudioError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        return action(conn, _home(args))
    except (TaskFileError, LabelStudioError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


def cmd_labels_push(args: argparse.Namespace) -> int:
    return _with_label_studio(args, lambda conn, home: _labels_push(conn, home, args.version))


def _labels_push(conn, home, version: str | None) -> int:
    from eval_pipeline.lib.labeling.label_studio import outbox_tasks, push

    name, rubric_tasks = outbox_tasks(home.labels_outbox, version)
    results = push(conn, rubric_tasks)
    for r in results:
        what = "created" if r.created else ("labeling config updated" if r.config_updated else "found")
        print(f"{r.title} (project {r.project_id}, {what}): {r.imported} tasks imported, {r.already_there} already "
              f"there; {r.tasks_in_project} tasks in the project")
    print(f"eval set {name}: {sum(r.examples for r in results)} examples in {len(results)} projects at {conn.url}")
    return 0


def cmd_labels_pull(args: argparse.Namespace) -> int:
    return _with_label_studio(args, _labels_pull)


def _labels_pull(conn, home) -> int:
    from eval_pipeline.lib.labeling.label_studio import pull

    results = pull(conn, home.labels_inbox)
    if not results:
        print(f"no project titled 'eval-pipeline <rubric>' at {conn.url}: run `eval-pipeline labels push` first")
        return 0
    for r in results:
        print(f"{r.title} (project {r.project_id}): {r.tasks} tasks, {r.annotations} annotations"
              + (f" (+{r.cancelled} skipped)" if r.cancelled else "")
              + f", {len(r.annotators)} annotators -> {r.path}" + ("" if r.changed else " (unchanged)"))
    annotators = sorted({a for r in results for a in r.annotators})
    print(f"{sum(r.tasks for r in results)} tasks, {sum(r.annotations for r in results)} annotations, "
          f"{len(annotators)} annotators ({', '.join(annotators) or 'none'}) in {home.labels_inbox}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from eval_pipeline import __version__
    from eval_pipeline.lib.ingest.adapters import FORMATS
    from eval_pipeline.lib.ingest.ingestion import DEFAULT_MAX_LINE_BYTES
    from eval_pipeline.lib.runs.progress import MODES

    parser = argparse.ArgumentParser(prog="eval-pipeline", description=__doc__)
    parser.add_argument("--version", action="version", version=f"eval-pipeline {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_home(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--home", help="data home (default: $EVAL_PIPELINE_HOME, else ./data)")
        return p

    def with_progress(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--progress", choices=MODES, default="auto",
                       help="progress on stderr: auto (default) redraws one status line on a terminal and writes "
                            "a timestamped line per finished day or step elsewhere; plain always writes lines; "
                            "none shows nothing")
        return p

    p = sub.add_parser("generate-logs", help="write realistic demo production logs in the canonical, openai and otlp formats")
    p.add_argument("--out", required=True, help="folder for the log files (e.g. <data home>/landing/demo)")
    p.add_argument("--start", required=True, help="first day, YYYY-MM-DD")
    p.add_argument("--days", type=int, required=True)
    p.add_argument("--per-day", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--truth", help="folder for the generator's ground truth (default: <out>/../demo_truth)")
    p.set_defaults(func=cmd_generate_logs)

    p = sub.add_parser("validate-logs", help="parse and validate log files without running the pipeline")
    p.add_argument("files", nargs="+", help="files or folders")
    p.add_argument("--format", choices=FORMATS, help="declare the format (default: detect)")
    p.add_argument("--max-errors", type=int, default=20, help="errors to print (default 20)")
    p.add_argument("--max-line-bytes", type=int, default=DEFAULT_MAX_LINE_BYTES)
    p.set_defaults(func=cmd_validate_logs)

    p = sub.add_parser("schema", help="print (or write) the JSON Schema of the canonical log record")
    p.add_argument("--out")
    p.set_defaults(func=cmd_schema)

    p = with_progress(with_home(sub.add_parser("refresh", help="materialize a month: its daily partitions, then the "
                                                               "monthly assets")))
    p.add_argument("--month", required=True, help="YYYY-MM")
    p.add_argument("--workers", type=_positive_int, help="days processed at once, each in its own process "
                   "(default: one per CPU core)")
    p.add_argument("--refit", action="store_true", help="cluster the month afresh and match it one-to-one to the "
                   "month before, instead of assigning it to that month's clusters first (recorded as a refit in "
                   "the drift table and the changelog)")
    p.set_defaults(func=cmd_refresh)

    p = with_progress(with_home(sub.add_parser("demo", help="generate demo logs into the data home and run the "
                                                            "pipeline on them")))
    p.add_argument("--start", default="2026-08-01", help="first month of demo logs (default 2026-08-01)")
    p.add_argument("--months", type=int, default=3)
    p.add_argument("--per-day", type=int, default=40)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--workers", type=_positive_int, help="days processed at once (default: one per CPU core)")
    p.add_argument("--target-size", type=_positive_int, default=300, help="examples in the eval set (default 300)")
    p.set_defaults(func=cmd_demo)

    p = with_home(sub.add_parser("export-eval-set", help="write one eval-set version to a self-contained file"))
    p.add_argument("--version", default="latest", help="v1, v2, ... or latest (default)")
    p.add_argument("--format", choices=("jsonl", "parquet", "csv"), default="jsonl")
    p.add_argument("--out", required=True, help="file to write")
    p.set_defaults(func=cmd_export_eval_set)

    p = with_home(sub.add_parser("register-model", help="register a model version to evaluate (baseline or candidate)"))
    p.add_argument("--name", required=True, help="model name, e.g. support-assistant")
    p.add_argument("--version", required=True, help="version, e.g. 2026-09")
    p.add_argument("--provider", required=True, choices=("openai-compatible", "recorded"))
    p.add_argument("--base-url", help="openai-compatible: the endpoint, e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--model", help="openai-compatible: the model id the endpoint serves")
    p.add_argument("--api-key-env", help="openai-compatible: NAME of the environment variable holding the key")
    p.add_argument("--recorded", help="recorded: JSONL of outputs keyed by example_id or prompt_sha256")
    p.add_argument("--param", action="append", help="request parameter key=value (temperature, max_tokens); repeatable")
    p.add_argument("--baseline", action="store_true", help="register as the baseline the name's candidates are compared with")
    p.add_argument("--description")
    p.set_defaults(func=cmd_register_model)

    p = with_progress(with_home(sub.add_parser("evaluate", help="evaluate a registered version against its baseline; "
                                                                "exit 0 pass, 1 fail, 2 inconclusive or error")))
    p.add_argument("--model", required=True, help="NAME:VERSION")
    p.add_argument("--baseline", help="NAME:VERSION (default: the latest registered baseline of the same name)")
    p.add_argument("--tier", choices=("continuous", "deep"), default="deep",
                   help="continuous: a fixed stratified subset of 100-200 examples; deep: the whole set (default)")
    p.add_argument("--thresholds", help="gates YAML (default: the packaged eval_pipeline/thresholds.yaml)")
    p.add_argument("--workers", type=int, help="requests in flight to an OpenAI-compatible endpoint (default 4)")
    p.add_argument("--no-rescore-baseline", dest="rescore_baseline", action="store_false",
                   help="compare with the baseline's stored scores even when they are on an older eval-set version "
                        "(or a smaller tier): the baseline is not run again and only the examples both versions "
                        "hold are paired (the scorecard says how many). Default: re-score the baseline on the "
                        "current eval set, which pairs every example (the most power)")
    p.set_defaults(func=cmd_evaluate)

    p = with_home(sub.add_parser("review-failures", help="re-issue a deep evaluation's scorecard with the reviewers' "
                                                         "verdicts on its failures (no model is called); "
                                                         "exit 0 pass, 1 fail, 2 inconclusive or error"))
    p.add_argument("--model", required=True, help="NAME:VERSION")
    p.add_argument("--baseline", help="NAME:VERSION (default: the latest registered baseline of the same name)")
    p.add_argument("--thresholds", help="gates YAML the scorecard is re-issued with (default: the packaged "
                                        "eval_pipeline/thresholds.yaml); give the one `evaluate` used")
    p.set_defaults(func=cmd_review_failures)

    p = with_home(sub.add_parser("ui", help="start the Dagster UI (dagster dev) on the data home"))
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=3000)
    p.set_defaults(func=cmd_ui)

    p = with_home(sub.add_parser("move-to-lake", help="move the large tables of a data home filled without "
                                                       "EVAL_PIPELINE_STORAGE into that storage"))
    p.set_defaults(func=cmd_move_to_lake)

    labels = sub.add_parser("labels", help="annotation through a running Label Studio server "
                                           "(LABEL_STUDIO_URL, LABEL_STUDIO_API_KEY)")
    labels_sub = labels.add_subparsers(dest="labels_command", required=True)
    p = with_home(labels_sub.add_parser("push", help="create or update one project per rubric and import the "
                                                     "eval set's examples that are not there yet"))
    p.add_argument("--version", default="latest", help="eval-set version: v1, v2, ... or latest (default)")
    p.set_defaults(func=cmd_labels_push)
    p = with_home(labels_sub.add_parser("pull", help="download each project's annotations into <data home>/labels/inbox/"))
    p.set_defaults(func=cmd_labels_pull)

    p = with_home(sub.add_parser("redact", help="redact PII from JSONL ({\"text\": ...} lines or canonical log records) "
                                                "with the pipeline's redaction settings"))
    p.add_argument("--in", dest="input", help="input JSONL (default: stdin)")
    p.add_argument("--out", dest="output", help="output JSONL (default: stdout)")
    p.add_argument("--score-threshold", type=float, default=None,
                   help="minimum recognizer score (default: the pipeline's redaction setting, 0.5 unless configured)")
    p.set_defaults(func=cmd_redact)

    p = with_home(sub.add_parser("probe-judge", help="bias probes of the LLM judge (length, hedging, confidence, "
                                                     "planted errors) on a month's human-labelled examples"))
    p.add_argument("--month", help="YYYY-MM (default: the latest month with an eval set)")
    p.add_argument("--sample", type=int, default=60, help="examples with human labels to probe (default 60)")
    p.add_argument("--threshold", type=float, default=0.10, help="smallest shift or miss rate flagged (default 0.10)")
    p.set_defaults(func=cmd_probe_judge)

    p = sub.add_parser("power", help="examples needed to detect a change in pass rate, or the change a set can detect")
    p.add_argument("--baseline-rate", type=float, required=True, help="the baseline's pass rate, e.g. 0.8")
    p.add_argument("--effect", type=float, help="the change to detect, absolute (0.05 = 5 points)")
    p.add_argument("--n", type=int, help="the eval set's size (instead of --effect)")
    p.add_argument("--slice-share", type=float, default=1.0, help="the slice's share of the set (0.1 = 10%%: needs 10x)")
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument("--power", type=float, default=0.8)
    p.add_argument("--discordance", type=float, help="share of examples on which two models disagree (paired design)")
    p.set_defaults(func=cmd_power)
    return parser


# Below this much free space a refresh would fail part way through a run: refused before it starts.
MIN_FREE_BYTES = 64 * 2**20


class EnvironmentProblem(Exception):
    """The data home cannot be used as it is (read-only, full, a file held by another process)."""


def check_landing(args: argparse.Namespace) -> str | None:
    """For ``refresh``: what is wrong when the data home has no landing folder (a new or moved data
    home: there is nothing to read), else None. Looked at before :func:`check_home` creates the
    folder; a month that cannot be refreshed is left to ``refresh_month`` to name first."""
    from eval_pipeline.defs.partitions import daily_partitions
    from eval_pipeline.lib.core.paths import DataHome
    from eval_pipeline.runs import month_days

    landing = DataHome.resolve(args.home).landing
    try:
        has_days = any(daily_partitions.has_partition_key(day) for day in month_days(args.month))
    except ValueError:
        return None
    if has_days and not landing.is_dir() and not landing.is_symlink():  # a dangling link: check_home names it
        return (f"the landing folder {landing} does not exist: put the log files there (any subfolders), or give "
                "the data home that holds them (--home or EVAL_PIPELINE_HOME)")
    return None


def check_home(root: str | os.PathLike[str] | None) -> None:
    """Raise :class:`EnvironmentProblem` naming the path when the data home cannot be written,
    is nearly full, its landing folder links to a missing place, or it has a DuckDB file held by a process outside this project's file lock
    (DuckDB takes one writer process per file; the project's own processes queue for it)."""
    import duckdb

    from eval_pipeline.lib.core.locks import file_lock
    from eval_pipeline.lib.core.paths import DataHome

    home = DataHome.resolve(root)
    if home.landing.is_symlink() and not home.landing.exists():  # e.g. a share that is not mounted
        raise EnvironmentProblem(f"the landing folder {home.landing} links to {os.readlink(home.landing)}, which "
                                 "does not exist: mount or create it (or point the link elsewhere) and run again")
    try:
        home.ensure()
        probe = home.root / f".write-check-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as err:
        where = err.filename or home.root
        raise EnvironmentProblem(f"cannot write to the data home: {where}: {err.strerror or err}; "
                                 "make it writable (or choose another with --home)") from None
    free = shutil.disk_usage(home.root).free
    if free < MIN_FREE_BYTES:
        raise EnvironmentProblem(f"the data home {home.root} has only {free / 2**20:.1f} MiB free (at least "
                                 f"{MIN_FREE_BYTES // 2**20} MiB needed): free some space, or choose another with --home")
    for path in (home.raw_warehouse, home.warehouse):
        if not path.exists():
            continue
        try:
            with file_lock(f"{path}.lock"), duckdb.connect(str(path)):
                pass
        except duckdb.IOException as err:
            if "lock" not in str(err).lower():
                raise
            holder = str(err).split("Conflicting lock is held in", 1)[-1].split(". See also")[0].strip()
            raise EnvironmentProblem(f"{path} is open in another process ({holder}): close it (a DuckDB file takes "
                                     "one writing process at a time) and run again") from None


def main(argv: list[str] | None = None) -> int:
    warnings.filterwarnings("ignore", message=".*is currently in (preview|beta).*")
    args = build_parser().parse_args(argv)
    from eval_pipeline.lib.storage.lake import StorageLocations

    try:  # settings from the environment and the data home's settings.yaml, checked before anything runs
        StorageLocations.resolve()
        if hasattr(args, "home"):
            from eval_pipeline.defs.resources import settings_from_file

            settings_from_file(_home(args))
        if args.func in (cmd_refresh, cmd_demo, cmd_evaluate, cmd_review_failures, cmd_probe_judge, cmd_ui):  # they run Dagster
            from eval_pipeline.defs.executors import executor_from_env

            executor_from_env()
            missing = check_landing(args) if args.func is cmd_refresh else None
            check_home(args.home)  # first: an unwritable or full data home is the more basic problem
            if missing:
                raise EnvironmentProblem(missing)
    except (ValueError, EnvironmentProblem) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    import duckdb

    try:
        return args.func(args)
    except OSError as err:  # the file system failed under a command: the path, not a traceback
        where = f"{err.filename}: " if err.filename else ""
        print(f"error: {where}{err.strerror or err}", file=sys.stderr)
        return 2
    except duckdb.IOException as err:  # e.g. another process took a DuckDB file while the command ran
        print(f"error: {str(err).split(' See also')[0]}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
