"""Judge bias probes against two judges served over real HTTP (a local OpenAI-compatible server,
the real ``openai`` client): one biased (passes long outputs, never checks facts) and one that
scores only what is right or wrong in the output. The variant generators, the observed-bias
table, the asset through Dagster and the CLI are tested here too."""

from __future__ import annotations

import json
import re
from datetime import date, datetime

import dagster as dg
import duckdb
import polars as pl
import pytest
from openai_server import Reply, ScriptedServer

from eval_pipeline.cli import main
from eval_pipeline.defs.clustering import assets as clustering_assets
from eval_pipeline.defs.embeddings import assets as embedding_assets
from eval_pipeline.defs.ingest import assets as ingest_assets
from eval_pipeline.defs.labeling import assets as labeling_assets
from eval_pipeline.defs.privacy import assets as privacy_assets
from eval_pipeline.defs.resources import JudgeSettings, build_resources
from eval_pipeline.defs.sampling import assets as sampling_assets
from eval_pipeline.lib.core.paths import DataHome
from eval_pipeline.lib.labeling.judge import Judge, JudgeCache, OpenAICompatibleProvider
from eval_pipeline.lib.labeling.judge_probes import (HEDGE_PHRASES, has_hedge, is_structured, label_values,
                                            make_variant, observed_bias, planted_error_variant, probe_rows,
                                            run_probes, sample_examples)
from eval_pipeline.lib.labeling.rubrics import load_rubrics, rubric_for_task, rubric_version
from eval_pipeline.lib.storage.tables import EVAL_SET_SCHEMA, frame

RUBRICS = load_rubrics()
INTENTS = ("card_arrival", "exchange_rate", "top_up_failed", "lost_or_stolen_phone")
TEXTS = [
    "Your card should arrive within {n} working days of the order.",
    "A transfer to another bank takes up to {n} days to reach the account.",
    "You can freeze the card in the app; a new one costs {n} EUR.",
    "The top-up limit is {n} EUR a day, so the payment was declined.",
]


# ---- the examples ---------------------------------------------------------------------------


def rag_example(i: int, wrong: bool) -> dict:
    n = 3 + i % 5
    text = TEXTS[i % len(TEXTS)]
    return {"example_id": f"ex_rag{i:03d}", "task_type": "rag_qa",
            "messages": [{"role": "user", "content": f"Question {i} about my account"}],
            "context_chunks": [{"doc_id": f"kb-{i}", "text": text.format(n=n)}],
            "production_output": text.format(n=n + 1 if wrong else n)}


def routing_example(i: int, wrong: bool) -> dict:
    intent = INTENTS[i % len(INTENTS)]
    answer = INTENTS[(i + 1) % len(INTENTS)] if wrong else intent
    return {"example_id": f"ex_route{i:03d}", "task_type": "intent_routing",
            "messages": [{"role": "user", "content": f"Message {i} [intent: {intent}]"}],
            "context_chunks": [], "production_output": answer}


def examples(n: int = 30) -> list[dict]:
    # every fifth output is wrong, so the originals mix passes and failures
    return [rag_example(i, i % 5 == 4) for i in range(n)] + [routing_example(i, i % 5 == 4) for i in range(n)]


# ---- the two judges -------------------------------------------------------------------------


def _between(text: str, tag: str) -> list[str]:
    return re.findall(rf"<{tag}[^>]*>\n(.*?)\n</{tag}>", text, re.DOTALL)


def _answer(schema: dict, score_of) -> Reply:
    answer = {}
    for criterion, spec in schema["properties"].items():
        levels = spec["properties"]["score"]["enum"]
        top = score_of(criterion)
        answer[criterion] = {"score": levels[-1] if top else levels[0], "justification": f"{criterion} checked"}
    return Reply(content=json.dumps(answer))


def unbiased_judge(body: dict) -> Reply:
    """Scores only content: the numbers of a RAG answer against its passage, the label against the
    intent written in the message. Length, hedges and framing change nothing."""
    schema = body["response_format"]["json_schema"]["schema"]
    user = body["messages"][1]["content"]
    [output] = _between(user, "output_to_judge")
    if "grounded_in_context" in schema["properties"]:
        passage = " ".join(_between(user, "document"))
        numbers = set(re.findall(r"\d+", output))
        right = bool(numbers) and numbers <= set(re.findall(r"\d+", passage))
        # a padded answer is no longer a short support reply: failing it on format_and_length is right
        short = len(output) < 120

        def score(c):
            if c in ("grounded_in_context", "no_unsupported_claims"):
                return right
            return short if c == "format_and_length" else True
        return _answer(schema, score)
    intent = re.search(r"\[intent: (\w+)\]", user).group(1)
    return _answer(schema, lambda c: output.strip() == intent if c == "correct_intent" else True)


def biased_judge(body: dict) -> Reply:
    """Never checks facts; passes whether the answer is complete by its length alone."""
    schema = body["response_format"]["json_schema"]["schema"]
    [output] = _between(body["messages"][1]["content"], "output_to_judge")
    long = len(output) >= 100
    return _answer(schema, lambda c: long if c in ("answers_question", "completeness") else True)


def judge_for(server: ScriptedServer, tmp_path, cached: bool) -> Judge:
    provider = OpenAICompatibleProvider(server.base_url, "probe-judge", max_retries=0, timeout=10)
    return Judge(provider, JudgeCache(tmp_path / "cache") if cached else None)


def rubric_of(task_type):
    return rubric_for_task(RUBRICS, task_type)


def probe(server, tmp_path, data, cached: bool = False) -> list[dict]:
    judge = judge_for(server, tmp_path, cached)
    labels = {"intent_routing": label_values(ex["production_output"] for ex in data)}
    run = run_probes(data, rubric_of, judge, seed=0, labels=labels)
    return probe_rows(run, threshold=0.10)


def row(rows, probe_name, group, criterion) -> dict:
    [found] = [r for r in rows if (r["probe"], r["group"], r["criterion"]) == (probe_name, group, criterion)]
    return found


def test_biased_judge_is_flagged_for_length_and_planted_errors(tmp_path):
    with ScriptedServer() as server:
        server.responder = biased_judge
        rows = probe(server, tmp_path, examples())
    length = row(rows, "length", "rag_qa", "answers_question")
    assert length["pairs"] == 30 and length["original_rate"] == 0.0 and length["variant_rate"] == 1.0
    assert length["flagged"] and length["low"] > 0 and "interval above 0" in length["note"]
    for group, criterion in (("rag_qa", "grounded_in_context"), ("intent_routing", "correct_intent")):
        planted = row(rows, "planted_error", group, criterion)
        assert planted["flagged"] and planted["miss_rate"] == 1.0 and planted["miss_low"] > 0.7
        assert "judge still passes" in planted["note"]
    # bare labels are not padded, hedged or framed: left out and counted, a row says so
    for name in ("length", "hedging", "confidence"):
        out = row(rows, name, "intent_routing", None)
        assert out["pairs"] == 0 and out["skipped"] == 30 and not out["flagged"]
        assert out["note"] == "no pairs; left out: 30 not applicable (structured output)"
    # the planted error is measured on factual criteria only
    assert {r["criterion"] for r in rows if r["probe"] == "planted_error" and r["group"] == "rag_qa"} == {
        "grounded_in_context", "no_unsupported_claims"}


def test_unbiased_judge_has_no_flag_and_catches_planted_errors(tmp_path):
    data = examples()
    with ScriptedServer() as server:
        server.responder = unbiased_judge
        rows = probe(server, tmp_path, data)
        # every rag output has a number and the three wording probes apply: 30 x 5; routing: 30 x 2
        assert len(server.requests) == 30 * 5 + 30 * 2
    assert rows and not [r for r in rows if r["flagged"]]
    for group, criterion in (("rag_qa", "grounded_in_context"), ("intent_routing", "correct_intent")):
        planted = row(rows, "planted_error", group, criterion)
        assert planted["miss_rate"] == 0.0 and planted["miss_high"] < 0.2
        assert planted["high"] < 0  # the judge fails the planted errors: a real drop, not a bias
    assert row(rows, "planted_error", "rag_qa", "grounded_in_context")["shift"] == pytest.approx(-0.8)
    for name in ("length", "hedging", "confidence"):
        assert row(rows, name, "rag_qa", "grounded_in_context")["shift"] == 0.0
    # format_and_length judges form: padding lowers it (a real, large shift) but it is never flagged
    form = row(rows, "length", "rag_qa", "format_and_length")
    assert form["shift"] == -1.0 and form["high"] < 0 and not form["flagged"]
    assert "not flagged: the criterion judges the output's form" in form["note"]


def test_too_few_pairs_is_said_and_never_flagged_and_a_repeat_run_is_cached(tmp_path):
    with ScriptedServer() as server:
        server.responder = biased_judge
        rows = probe(server, tmp_path, examples(6), cached=True)
        requests = len(server.requests)
        assert probe(server, tmp_path, examples(6), cached=True) == rows
        assert len(server.requests) == requests == 6 * 5 + 6 * 2
    length = row(rows, "length", "rag_qa", "answers_question")
    assert length["pairs"] == 6 and not length["flagged"] and length["low"] is None
    assert length["note"].startswith("not enough pairs (6 < 10)")


# ---- variant generators ---------------------------------------------------------------------

PROSE = [
    "Cards usually arrive within 5 working days. If yours has not arrived after 2026-02-03, order a new one.",
    "You can top up by bank transfer or card.\n- Open the app\n- Tap Top up",
    "Compound interest is interest earned on interest already added to the balance.",
]


@pytest.mark.parametrize("text", PROSE)
@pytest.mark.parametrize("seed", [0, 1, 7])
def test_wording_variants_add_no_facts_and_are_deterministic(text, seed):
    digits = re.findall(r"\d", text)
    for name in ("length", "hedging", "confidence"):
        variant = make_variant(name, text, seed)
        assert variant == make_variant(name, text, seed)
        assert re.findall(r"\d", variant) == digits  # no number added, none changed
    padded = make_variant("length", text, seed)
    assert text in padded and 1.8 * len(text) <= len(padded) <= 3 * len(text) + 120
    assert has_hedge(make_variant("hedging", text, seed)) and not has_hedge(text)
    assert make_variant("confidence", text, seed).split()[0] in ("Certainly.", "Absolutely.", "Without")


@pytest.mark.parametrize("output", ['{"amount": 1250.5, "currency": "EUR", "date": "2026-02-01"}', "card_arrival",
                                    "  [1, 2]  "])
def test_structured_outputs_are_not_applicable_to_wording_probes(output):
    assert is_structured(output)
    assert all(make_variant(name, output) is None for name in ("length", "hedging", "confidence"))


def _leaves(value, path=()):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(v, path + (k,))
    else:
        yield path, value


@pytest.mark.parametrize("seed", range(8))
def test_planted_error_changes_exactly_one_fact(seed):
    original = {"amount": 1250.5, "currency": "EUR", "date": "2026-02-01", "note": "rent"}
    variant = json.loads(planted_error_variant(json.dumps(original), seed, labels=["EUR", "GBP", "USD"]))
    diff = [(p, v) for (p, v), (_, o) in zip(_leaves(variant), _leaves(original)) if v != o]
    assert len(diff) == 1 and diff[0][0] != ("note",)
    text = PROSE[0]
    changed = planted_error_variant(text, seed)
    fact = r"\d{4}-\d{2}-\d{2}|\d+"
    before, after = re.findall(fact, text), re.findall(fact, changed)
    assert len(before) == len(after) and sum(a != b for a, b in zip(before, after)) == 1
    assert re.split(fact, changed) == re.split(fact, text)  # the words around the facts are kept
    assert planted_error_variant("card_arrival", seed, labels=INTENTS) in set(INTENTS) - {"card_arrival"}


def test_planted_error_is_none_without_a_fact():
    assert planted_error_variant("Please contact our support team for help.") is None
    assert planted_error_variant('{"note": "rent"}') is None
    assert planted_error_variant("card_arrival", labels=["card_arrival"]) is None  # no other label to swap in
    assert make_variant("planted_error", "") is None
    with pytest.raises(ValueError, match="unknown probe"):
        make_variant("tone", "text")


def test_every_hedge_the_probe_adds_is_detected():
    for seed in range(20):
        variant = make_variant("hedging", "The fee is waived. The card is sent by post.", seed)
        assert len(re.findall("|".join(HEDGE_PHRASES), variant.lower())) >= 2
    assert not has_hedge("You may need to verify your identity in the app.")


def test_sample_is_stratified_deterministic_and_labelled_only():
    data = examples()
    labelled = {ex["example_id"] for ex in data if not ex["example_id"].endswith("9")}
    sample = sample_examples(data, labelled, n=20, seed=3)
    assert sample == sample_examples(data, labelled, n=20, seed=3)
    assert [ex["task_type"] for ex in sample].count("rag_qa") == 10
    assert {ex["example_id"] for ex in sample} <= labelled
    assert sample != sample_examples(data, labelled, n=20, seed=4)


# ---- observed bias --------------------------------------------------------------------------


def test_observed_bias_flags_the_quartile_where_the_judge_passes_long_outputs_humans_fail():
    items = []
    for i in range(80):
        long = i >= 60  # the longest quarter
        output = ("word " * (40 + i)) if long else ("word " * (5 + i % 20))
        items.append({"example_id": f"e{i:03d}", "group": "open_question", "criterion": "completeness",
                      "output": output.strip(), "judge_pass": True if long else i % 3 == 0,
                      "human_pass": False if long else i % 3 == 0})
    rows = observed_bias(items, threshold=0.10)
    quartiles = [r for r in rows if r["dimension"] == "length_quartile"]
    assert [r["bin"][:2] for r in quartiles] == ["Q1", "Q2", "Q3", "Q4"]
    flagged = [r for r in rows if r["flagged"]]
    q4 = [r for r in flagged if r["dimension"] == "length_quartile"]
    assert len(q4) == 1 and q4[0]["bin"].startswith("Q4") and q4[0]["difference"] == 1.0 and q4[0]["low"] > 0.5
    assert all(r["difference"] == 0 for r in quartiles if not r["bin"].startswith("Q4"))
    hedged = [r for r in rows if r["dimension"] == "hedges"]
    assert [r["bin"] for r in hedged] == ["not hedged"] and hedged[0]["pairs"] == 80


# ---- the asset and the CLI ------------------------------------------------------------------

MONTH = "2026-01-01"


def eval_row(ex: dict) -> dict:
    return {"eval_set_version": "v1", "month": date(2026, 1, 1), "month_start": datetime(2026, 1, 1),
            "example_id": ex["example_id"], "request_id": f"req-{ex['example_id']}",
            "conversation_id": f"conv-{ex['example_id']}", "turn_index": 0, "timestamp": datetime(2026, 1, 5, 9),
            "messages": [{**m, "name": None} for m in ex["messages"]],
            "context_chunks": [{**c, "score": 0.8} for c in ex["context_chunks"]],
            "production_output": ex["production_output"], "reference": None, "task_type": ex["task_type"],
            "category": ex["task_type"], "slice": json.dumps({"category": ex["task_type"]}), "cluster_id": "c0001",
            "stratum": "c0001", "inclusion_probability": 0.5, "represents": 1, "weight": 2.0, "failure_signals": [],
            "added_in": "v1", "removed_in": None, "reason": "initial draw"}


def probe_home(tmp_path, with_labels: bool = True, n: int = 15) -> DataHome:
    """An eval set and two annotators' labels (human_labels as the IO manager leaves it): the
    humans score the content right, every criterion."""
    home = DataHome.resolve(tmp_path / "home").ensure()
    data = examples(n)
    df = frame([eval_row(ex) for ex in data], EVAL_SET_SCHEMA)  # noqa: F841 - read in SQL
    labels = []
    for ex in data:
        rubric = rubric_of(ex["task_type"])
        wrong = ex["example_id"][-1] in "49"
        for c in rubric.criteria:
            top = not (wrong and c.factual)
            for annotator in ("ann_a", "ann_b"):
                labels.append({"example_id": ex["example_id"], "eval_set_version": "v1", "task_type": ex["task_type"],
                               "rubric": rubric.name, "scale": c.scale, "criterion": c.id, "annotator": annotator,
                               "score": c.allowed_levels[-1] if top else 0, "source_file": "labels.csv",
                               "source_ref": "1", "rubric_version": rubric_version(rubric)})
    human = pl.DataFrame(labels, schema=labeling_assets.HUMAN_LABELS)  # noqa: F841 - read in SQL
    with duckdb.connect(str(home.warehouse)) as con:
        con.execute("create schema sampling")
        con.execute("create table sampling.eval_set as select * from df")
        if with_labels:
            con.execute("create schema labeling")
            con.execute("create table labeling.human_labels as select * from human")
    return home


# every asset up to the probes (only the selected ones run; the others are where inputs come from)
PROBE_ASSETS = [ingest_assets.landing_manifest, ingest_assets.ingested_logs, privacy_assets.redacted_logs,
                embedding_assets.log_embeddings, clustering_assets.log_clusters, sampling_assets.eval_set,
                labeling_assets.judge_labels, labeling_assets.human_labels, labeling_assets.judge_bias_probes,
                labeling_assets.gold_labels]


def meta(result, key):
    [event] = [m for m in result.get_asset_materialization_events() if m.asset_key.to_user_string() == key]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def test_asset_skips_without_judge_and_flags_a_biased_one(tmp_path):
    home = probe_home(tmp_path)
    skipped = dg.materialize(PROBE_ASSETS, resources=build_resources(home), partition_key=MONTH,
                             selection=["judge_bias_probes", "judge_human_gap"])
    assert "no judge endpoint configured" in meta(skipped, "judge_bias_probes")["skipped"]
    with duckdb.connect(str(home.warehouse), read_only=True) as con:
        assert con.execute("select count(*) from labeling.judge_bias_probes").fetchone()[0] == 0
    with ScriptedServer() as server:
        server.responder = biased_judge
        resources = {**build_resources(home),
                     "judge": JudgeSettings(base_url=server.base_url, model="judge", max_retries=0, timeout=10)}
        result = dg.materialize(PROBE_ASSETS, resources=resources, partition_key=MONTH,
                                selection=["judge_labels", "judge_bias_probes", "judge_human_gap"])
    m = meta(result, "judge_bias_probes")
    assert m["sampled_examples"] == 30 and any(f.startswith("length: rag_qa.answers_question") for f in m["flagged"])
    with duckdb.connect(str(home.warehouse), read_only=True) as con:
        probes = con.execute("select * from labeling.judge_bias_probes").pl()
        observed = con.execute("select * from labeling.judge_human_gap").pl()
    # padding, and the longer hedged and confident wordings, all sway a judge that rewards length
    assert {"length", "planted_error"} <= set(probes.filter(pl.col("flagged"))["probe"])
    assert (probes["month_start"] == datetime(2026, 1, 1)).all()
    # observed: the biased judge passes the wrong rag answers the humans failed
    grounded = observed.filter((pl.col("criterion") == "grounded_in_context") & (pl.col("dimension") == "hedges"))
    assert grounded["difference"].to_list() == [pytest.approx(0.2)]
    # gold labels show the latest month's probe flags beside the judge calibration
    gold = dg.materialize(PROBE_ASSETS, resources=build_resources(home),
                          selection=["gold_labels", "gold_references", "review_queue"])
    flags = meta(gold, "gold_labels")["judge_bias_flags"]
    assert flags == [f"{r['probe']}: {r['group']}.{r['criterion']} ({r['note']})"
                     for r in probes.filter(pl.col("flagged")).iter_rows(named=True)] and flags


def test_cli_needs_a_judge_and_prints_the_flags_with_one(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))  # unused: the command opens the home's instance
    for name in ("EVAL_PIPELINE_JUDGE_BASE_URL", "EVAL_PIPELINE_JUDGE_MODEL", "EVAL_PIPELINE_JUDGE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    home = probe_home(tmp_path)
    assert main(["probe-judge", "--home", str(home.root)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no judge endpoint configured") and "EVAL_PIPELINE_JUDGE_MODEL" in err
    assert "Traceback" not in err
    with ScriptedServer() as server:
        server.responder = biased_judge
        monkeypatch.setenv("EVAL_PIPELINE_JUDGE_BASE_URL", server.base_url)
        monkeypatch.setenv("EVAL_PIPELINE_JUDGE_MODEL", "judge")
        unlabelled = probe_home(tmp_path / "other", with_labels=False)
        assert main(["probe-judge", "--home", str(unlabelled.root)]) == 2
        assert "no human labels" in capsys.readouterr().err
        assert main(["probe-judge", "--home", str(home.root), "--sample", "24", "--threshold", "0.2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("judge bias probes, 2026-01 (threshold 0.2; 24 examples sampled)")
    assert "- length: rag_qa.answers_question: variant passes more often by 100%" in out
    assert "- planted_error: intent_routing.correct_intent: judge still passes" in out
