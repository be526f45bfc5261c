"""Demo logs through the ingest graph on a persistent Dagster instance, as `eval-pipeline refresh` runs it."""

import json
from collections import Counter
from datetime import date
from pathlib import Path

import duckdb
from sklearn.metrics import normalized_mutual_info_score

from eval_pipeline.cli import main
from eval_pipeline.demo.logs import generate_logs
from eval_pipeline.demo.settings import demo_resources
from eval_pipeline.lib.core.paths import DataHome
from eval_pipeline.runs import agreement_summary, cluster_summary, eval_set_versions, refresh_month, table_counts, version_summaries

# the generator's malformed kinds -> the reason ingestion must give them
EXPECTED_REASON = {
    "truncated_json": "invalid_json",
    "not_json": "invalid_json",
    "missing_completion": "missing_field",
    "negative_latency": "invalid_value",
    "invalid_timestamp": "invalid_timestamp",
    "wrong_type": "wrong_type",
}


def test_refresh_ingests_every_demo_record_and_quarantines_every_broken_line(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "unused"))  # refresh_month points it at the data home
    home = DataHome.resolve(tmp_path / "home").ensure()
    summary = generate_logs(home.landing / "demo", date(2026, 2, 1), 28, 25, seed=3, truth_dir=home.demo_truth)
    # as `eval-pipeline demo` runs it: with the demo's redaction allow-list, which must reach the
    # day workers (two by default on two cores) as well as this process
    result = refresh_month(home, "2026-02", resources=demo_resources())
    assert result.success and len(result.days) == 28

    counts = table_counts(home)
    assert counts["ingest.raw_logs"] == summary.records == 28 * 25
    malformed = [json.loads(line) for line in (home.demo_truth / "malformed.jsonl").read_text().splitlines()]
    assert counts["ingest.quarantined_logs"] == len(malformed) == summary.malformed_lines > 0
    with duckdb.connect(str(home.raw_warehouse), read_only=True) as con:
        quarantined = con.execute("select source_file, source_line, reason from ingest.quarantined_logs").fetchall()
        formats = dict(con.execute("select source_format, count(*) from ingest.raw_logs group by 1").fetchall())
        multi = con.execute("select min(len(messages)) from ingest.raw_logs where turn_index > 0").fetchone()[0]
    expected = Counter((m["file"], m["line"], EXPECTED_REASON[m["kind"]]) for m in malformed)
    assert Counter((f.removeprefix("demo/"), line, reason) for f, line, reason in quarantined) == expected
    assert set(formats) == {"canonical", "openai", "otlp"}
    assert multi >= 4  # a later turn carries system, user, assistant, user at least

    # the runs are on the data home's instance, where `eval-pipeline ui` will show them
    # privacy: every day's leak check passed (refresh fails on a failed check), and no inserted
    # email, phone, card or IBAN of the generator's truth appears anywhere in redacted_logs
    assert counts["privacy.redacted_logs"] == summary.records
    truth = [json.loads(line) for line in (home.demo_truth / "records.jsonl").read_text().splitlines()]
    planted = {(p["type"], p["value"]) for t in truth for p in t["pii"]}
    assert {kind for kind, _ in planted} >= {"EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "PERSON"}
    with duckdb.connect(str(home.warehouse), read_only=True) as con:
        redacted_text = "\n".join(str(row) for row in con.execute("select * from privacy.redacted_logs").fetchall())
    survivors = sorted(v for kind, v in planted if kind != "PERSON" and v in redacted_text)
    assert survivors == []
    people = {v for kind, v in planted if kind == "PERSON"}
    missed_people = {v for v in people if v in redacted_text}
    assert len(missed_people) <= 0.2 * len(people), f"names left: {sorted(missed_people)[:10]}"
    # the demo bank's name is on the demo's allow-list, not the default one: it survives every day
    # (the production default takes "You are Kestrel, the ... of Kestrel Bank" for two names)
    assert "You are Kestrel, the virtual assistant of Kestrel Bank" in redacted_text
    assert "You are <PERSON_" not in redacted_text, "the demo's extra_allow_list did not reach every day's redaction"

    instance_runs = home.dagster_home / "storage"
    assert instance_runs.exists() and any(instance_runs.iterdir())

    # embeddings and clusters: every record has a vector and a cluster; single-turn banking
    # queries cluster by their true intent; the first month's clusters are all new
    with duckdb.connect(str(home.warehouse), read_only=True) as con:
        embedded = con.execute("select count(*) from embeddings.log_embeddings").fetchone()[0]
        assigned = dict(con.execute("select request_id, cluster_id from clustering.log_clusters").fetchall())
        statuses = Counter(s for (s,) in con.execute("select status from clustering.cluster_drift").fetchall())
        table_sizes = con.execute("select sum(size) from clustering.cluster_table").fetchone()[0]
    assert embedded == len(assigned) == table_sizes == summary.records
    banking = [(t["intent"], assigned[t["request_id"]]) for t in truth if t["intent"] and t["turn_index"] == 0]
    nmi = normalized_mutual_info_score([i for i, _ in banking], [c for _, c in banking])
    print(f"\ndemo month: {len(set(assigned.values()))} clusters (with 'unclustered'); NMI of "
          f"{len(banking)} banking queries against their intent {nmi:.3f}; drift {dict(statuses)}")
    assert nmi >= 0.5
    assert set(statuses) == {"new"}
    # what `eval-pipeline demo` prints about the clusters
    [month] = cluster_summary(home)
    assert month["month"] == "2026-02" and month["records"] == summary.records
    assert month["clusters"] == statuses["new"] and month["drift"] == {"new": statuses["new"]}
    assert (home.reports / "clusters" / "2026-02.png").exists()


def test_demo_builds_an_eval_set_and_refreshes_it_twice(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "unused"))
    home = tmp_path / "home"
    assert main(["demo", "--home", str(home), "--months", "3", "--per-day", "8", "--start", "2026-05-01",
                 "--target-size", "150"]) == 0
    out = capsys.readouterr().out
    versions = eval_set_versions(DataHome.resolve(home))
    print("\n" + out[out.index("eval set versions"):])
    assert [(v["version"], v["month"]) for v in versions] == [("v1", "2026-05"), ("v2", "2026-06"), ("v3", "2026-07")]
    assert versions[0]["added"] == versions[0]["examples"] > 0 and versions[0]["removed"] == 0
    # a steady set: every version within 10% of the target, the sizes follow the changelog, and
    # the demo prints each version's churn and the share of traffic in continuing clusters
    for before, after in zip(versions, versions[1:]):
        assert after["examples"] == before["examples"] + after["added"] - after["removed"]
    assert all(135 <= v["examples"] <= 165 for v in versions), versions
    summaries = version_summaries(DataHome.resolve(home))
    assert [summaries[v]["cluster_mode"] for v in ("v1", "v2", "v3")] == ["initial", "assigned", "assigned"]
    # months of 250 records leave many unclustered; the default demo's months of 1,200 keep 80-84%
    assert all(summaries[v]["continuing_share"] >= 0.6 for v in ("v2", "v3"))
    assert out.count("of the month's traffic in continuing clusters") >= 2 and "churn" in out
    assert out.count("of the traffic in continuing clusters") == 2
    assert "## v3 (2026-07)" in out and "## v1 (2026-05)" in out and "export-eval-set" in out
    # labels: three simulated annotators on the latest version; the deliberately ambiguous
    # criterion (rag_qa.completeness) is the one flagged as an unclear rubric
    agreement = {row["criterion"]: row for row in agreement_summary(DataHome.resolve(home))}
    ambiguous = agreement["rag_qa.completeness"]
    assert ambiguous["value"] < 0.6 and "unclear_rubric" in ambiguous["flags"]
    unclear = {c for c, r in agreement.items() if "unclear_rubric" in (r["flags"] or "")}
    assert unclear == {"rag_qa.completeness"}
    assert sum(r["value"] is not None and r["value"] >= 0.6 for r in agreement.values()) >= 0.6 * len(agreement)
    assert "rag_qa.completeness" in out and "unclear_rubric" in out
    # the demo ends with both recorded versions evaluated: the candidate's rare-intent routing
    # regression fails the routing slice's gate, and the report's path is printed
    cards = {v: json.loads((Path(home) / "reports" / "scorecards" / "support-assistant" / f"{v}.deep.json").read_text())
             for v in ("2026-06", "2026-09")}
    assert cards["2026-06"]["verdict"] != "fail" and cards["2026-06"]["baseline"] is None
    candidate = cards["2026-09"]
    assert candidate["verdict"] == "fail" and candidate["baseline"] == "support-assistant:2026-06"
    routing = next(s for s in candidate["slices"] if s["slice"] == "category=intent_routing")
    assert routing["status"] == "fail" and routing["paired"]["baseline_only"] > 0 and routing["paired"]["candidate_only"] == 0
    assert candidate["worst_slice"] == "category=intent_routing"
    assert abs(candidate["overall"]["paired"]["difference"]) < abs(routing["paired"]["difference"])
    assert "verdict: FAIL  support-assistant:2026-09 vs support-assistant:2026-06" in out
    assert "2026-09.deep.html" in out
