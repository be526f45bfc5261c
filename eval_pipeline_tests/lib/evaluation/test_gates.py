"""Gates and verdicts (lib/evaluation/gates.py), tiers and output scoring (lib/evaluation/runner.py)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from eval_pipeline.lib.evaluation.gates import (Thresholds, ThresholdsError, build_scorecard, latest_scoring, load_thresholds,
                                     scorecard_text, slice_names, version_order)
from eval_pipeline.lib.evaluation.runner import score_output, select_tier
from eval_pipeline.lib.labeling.rubrics import load_rubrics, rubric_for_task

GATES = Thresholds.model_validate({
    "overall": {"max_drop": 0.10},
    "default_slice": {"max_drop": 0.10},
    "slices": {"category=intent_routing": {"critical": True, "max_drop": 0.05},
               "category=extraction": {"critical": True, "max_drop": 0.05}},
})


def rows(category: str, outcomes: list[str], prefix: str | None = None) -> list[dict]:
    prefix = prefix or category
    return [{"example_id": f"{prefix}-{i}", "slice": json.dumps({"category": category}), "weight": 1.0, "status": s}
            for i, s in enumerate(outcomes)]


def card(candidate, baseline, gates=GATES):
    return build_scorecard(candidate, baseline, gates, model="m:2", baseline_model="m:1" if baseline else None,
                           eval_set_version="v1", tier="deep", created_at="2026-12-01T00:00:00Z")


def regression_set():
    """150 routing examples (the baseline passes 135) and 250 extraction (225); the candidate
    newly fails 10 routing examples (rare intents) and is otherwise the same."""
    base = rows("intent_routing", ["passed"] * 135 + ["failed"] * 15) + rows("extraction", ["passed"] * 225 + ["failed"] * 25)
    cand = [dict(r) for r in base]
    for r in cand[:10]:
        r["status"] = "failed"
    return base, cand


def slice_row(result, name):
    return next(s for s in result["slices"] if s["slice"] == name)


def test_rare_intent_regression_fails_its_slice_while_overall_passes():
    base, cand = regression_set()
    result = card(cand, base)
    routing = slice_row(result, "category=intent_routing")
    assert result["overall"]["status"] == "pass"
    assert abs(result["overall"]["paired"]["difference"] + 10 / 400) < 1e-9
    assert routing["status"] == "fail"
    assert routing["paired"]["baseline_only"] == 10 and routing["paired"]["candidate_only"] == 0
    assert routing["paired"]["p_value"] < 0.01 and routing["paired"]["high"] < 0
    assert result["verdict"] == "fail"
    assert result["worst_slice"] == "category=intent_routing"
    assert any("category=intent_routing fail" in r and "beyond its 5.0-point limit" in r for r in result["reasons"])
    assert slice_row(result, "category=extraction")["status"] == "pass"


def test_identical_candidate_is_not_called_worse():
    base, _ = regression_set()
    result = card([dict(r) for r in base], base)
    assert result["verdict"] == "pass"
    assert all(s["status"] == "pass" for s in [result["overall"], *result["slices"]])
    assert result["overall"]["paired"]["difference"] == 0 and result["overall"]["paired"]["p_value"] == 1.0


def test_tiny_set_is_inconclusive_and_says_how_many_examples_are_needed():
    base = rows("intent_routing", ["passed"] * 6)
    cand = rows("intent_routing", ["passed"] * 5 + ["failed"])
    result = card(cand, base)
    routing = slice_row(result, "category=intent_routing")
    assert routing["status"] == "inconclusive" and result["verdict"] == "inconclusive"
    assert routing["needed_examples"] > 6
    assert routing["mde"] is None or routing["mde"] > 0.05
    assert any("would settle it" in r for r in result["reasons"])
    # an unchanged tiny set cannot pass either: six examples cannot rule out a 5-point drop
    same = card(base, base)
    assert slice_row(same, "category=intent_routing")["status"] == "inconclusive"


def test_provider_errors_are_errors_not_passes():
    base, cand = regression_set()
    cand = [dict(r) for r in base]
    for r in cand[200:205]:
        r["status"] = "error"
    result = card(cand, base)
    assert result["counts"]["errors"] == 5 and result["counts"]["scored"] == 395
    assert result["counts"]["passed"] == sum(r["status"] == "passed" for r in cand)
    assert result["verdict"] == "inconclusive"
    assert any("5 of 400 examples errored" in r for r in result["reasons"])
    tolerant = GATES.model_copy(update={"max_error_share": 0.02})
    assert card(cand, base, tolerant)["verdict"] == "pass"


def test_floor_pass_fail_inconclusive():
    gates = Thresholds.model_validate({"slices": {"category=rag_qa": {"critical": True, "floor": 0.7}}})
    assert slice_row(card(rows("rag_qa", ["passed"] * 95 + ["failed"] * 5), None, gates), "category=rag_qa")["status"] == "pass"
    low = card(rows("rag_qa", ["passed"] * 40 + ["failed"] * 60), None, gates)
    assert slice_row(low, "category=rag_qa")["status"] == "fail" and low["verdict"] == "fail"
    near = slice_row(card(rows("rag_qa", ["passed"] * 15 + ["failed"] * 5), None, gates), "category=rag_qa")
    assert near["status"] == "inconclusive" and near["needed_examples"] > 20


def test_not_scored_examples_are_neither_passes_nor_fails():
    cand = rows("intent_routing", ["passed"] * 50) + rows("open_question", ["not_scored"] * 30)
    result = card(cand, None)
    assert result["counts"] == {"examples": 80, "scored": 50, "passed": 50, "failed": 0, "not_scored": 30, "errors": 0}
    assert result["overall"]["rate"] == 1.0
    assert slice_row(result, "category=open_question")["status"] == "not_scored"
    # a critical slice that cannot be scored makes the verdict inconclusive
    gates = Thresholds.model_validate({"slices": {"category=open_question": {"critical": True, "max_drop": 0.05}}})
    assert card(cand, None, gates)["verdict"] == "inconclusive"


def test_weighted_rate_uses_traffic_weights():
    cand = rows("intent_routing", ["passed"] * 10 + ["failed"] * 10)
    for r in cand[:10]:
        r["weight"] = 3.0
    result = card(cand, None)
    assert result["overall"]["rate"] == 0.5
    assert result["weighted"]["estimate"] == pytest.approx(0.75)
    assert result["weighted"]["n_eff"] < 20


def test_scorecard_text_lists_every_slice():
    base, cand = regression_set()
    text = scorecard_text(card(cand, base))
    assert text.startswith("verdict: FAIL  m:2 vs m:1")
    assert "category=intent_routing" in text and "category=extraction" in text and "worst slice" in text


# --------------------------------------------------------------------------------------------
# a baseline scored on another eval-set version
# --------------------------------------------------------------------------------------------


def across_versions(candidate, baseline, **kw):
    return build_scorecard(candidate, baseline, GATES, model="m:2", baseline_model="m:1", eval_set_version="v3",
                           tier="deep", created_at="2026-12-01T00:00:00Z", **kw)


def v2_and_v3():
    """The baseline on v2: routing examples r-0..r-99, passing r-0..r-89. v3 dropped r-0..r-19 and
    added n-0..n-29 (routing) and x-0..x-9 (extraction, a slice v2 did not have). The candidate
    answers the shared r-20..r-99 like the baseline except r-20..r-29, which it newly fails, and
    passes every new example."""
    base = rows("intent_routing", ["passed"] * 90 + ["failed"] * 10, prefix="r")
    cand = [dict(r) for r in base[20:]]
    for r in cand[:10]:
        r["status"] = "failed"
    cand += rows("intent_routing", ["passed"] * 30, prefix="n") + rows("extraction", ["passed"] * 10, prefix="x")
    return base, cand


def test_other_version_pairs_only_the_shared_examples_and_says_how_many():
    base, cand = v2_and_v3()
    result = across_versions(cand, base, baseline_eval_set_version="v2")
    assert result["eval_set_version"] == "v3" and result["baseline_eval_set_version"] == "v2"
    summary = "baseline scored on v2, candidate on v3: paired on 80 shared examples (40 only in v3, 20 only in v2)"
    assert result["comparison"] == {"candidate_version": "v3", "baseline_version": "v2", "same_version": False,
                                    "shared_examples": 80, "candidate_only_examples": 40, "baseline_only_examples": 20,
                                    "summary": summary}
    assert summary in result["reasons"]
    # the pairs are r-20..r-99: the baseline passes 70 of them (r-20..r-89), the candidate 60
    routing = slice_row(result, "category=intent_routing")
    assert routing["paired"]["n"] == 80 and routing["shared_examples"] == 80
    assert routing["baseline"] == {**routing["baseline"], "rate": 70 / 80, "scored": 80}
    assert routing["paired"]["difference"] == pytest.approx(-10 / 80)
    assert (routing["paired"]["baseline_only"], routing["paired"]["candidate_only"]) == (10, 0)
    # the candidate's own rate is over everything it scored on v3 (60 + 30 of 110)
    assert routing["scored"] == 110 and routing["rate"] == pytest.approx(90 / 110)
    assert routing["status"] == "fail" and result["verdict"] == "fail"
    assert result["overall"]["paired"]["n"] == 80
    # a slice new in v3 has nothing to pair: its drop gate cannot be told, and the card says why
    extraction = slice_row(result, "category=extraction")
    assert extraction["shared_examples"] == 0 and extraction["paired"] is None and extraction["baseline"] is None
    assert extraction["status"] == "inconclusive"
    assert "none of this slice's 10 examples is in the baseline's run on v2" in extraction["detail"]

    text = scorecard_text(result)
    assert f"  comparison: {summary}" in text
    assert "paired" in text.splitlines()[text.splitlines().index("  (pass rate: the candidate's, on all it scored; "
                                                                   "baseline, change and McNemar p: on the paired "
                                                                   "examples)") + 1]
    overall_line = next(line for line in text.splitlines() if line.startswith("  overall "))
    assert overall_line.split()[2:4] == ["120", "80"]  # scored, paired


def test_baseline_version_is_read_from_its_rows_and_must_be_one():
    base, cand = v2_and_v3()
    stated = across_versions(cand, [{**r, "eval_set_version": "v2"} for r in base])
    assert stated["comparison"]["baseline_version"] == "v2" and stated["comparison"]["shared_examples"] == 80
    mixed = [{**r, "eval_set_version": "v2"} for r in base] + [{"example_id": "r-0", "status": "failed",
                                                               "eval_set_version": "v1"}]
    with pytest.raises(ValueError, match="on eval-set versions v1, v2: pass the rows of one scoring"):
        across_versions(cand, mixed)
    # the rows of the latest scoring, by version number (v10 after v9)
    version, latest = latest_scoring([{"example_id": "a", "eval_set_version": "v9"},
                                      {"example_id": "b", "eval_set_version": "v10"}])
    assert version == "v10" and [r["example_id"] for r in latest] == ["b"]
    assert latest_scoring([]) == (None, [])
    assert sorted(["v10", "v2", "v1"], key=version_order) == ["v1", "v2", "v10"]


def test_nothing_shared_leaves_the_drop_gates_unevaluated_not_passed():
    base = rows("intent_routing", ["passed"] * 100, prefix="old")
    cand = rows("intent_routing", ["passed"] * 100, prefix="new")  # a perfect candidate, on other examples
    result = across_versions(cand, base, baseline_eval_set_version="v2")
    cmp = result["comparison"]
    assert (cmp["shared_examples"], cmp["candidate_only_examples"], cmp["baseline_only_examples"]) == (0, 100, 100)
    assert cmp["summary"] == ("baseline scored on v2, candidate on v3: no example is in both runs (100 only in v3, "
                              "100 only in v2), so nothing is paired and the drop gates are not evaluated "
                              "(inconclusive)")
    assert result["verdict"] == "inconclusive"
    assert result["overall"]["paired"] is None and result["overall"]["status"] == "inconclusive"
    assert any(r.startswith("overall inconclusive: max drop not evaluated: the baseline's run on v2 and the "
                            "candidate's on v3 share no example") for r in result["reasons"])
    assert cmp["summary"] in result["reasons"]
    assert result["overall"]["mde"] is None  # no paired comparison, so no detectable change to state


def test_same_version_says_every_example_is_shared():
    base, cand = regression_set()
    result = card(cand, base)
    assert result["comparison"] == {
        "candidate_version": "v1", "baseline_version": "v1", "same_version": True, "shared_examples": 400,
        "candidate_only_examples": 0, "baseline_only_examples": 0,
        "summary": "baseline and candidate scored on the same eval-set version v1: all 400 examples shared"}
    assert result["baseline_eval_set_version"] == "v1"
    assert not any("eval-set version" in r for r in result["reasons"])  # nothing to qualify the verdict with
    assert "  comparison: baseline and candidate scored on the same eval-set version v1: all 400 examples shared" \
        in scorecard_text(result)
    assert card(cand, None)["comparison"] is None
    # a subset of the baseline's run (the continuous tier against a deep baseline) is still fully paired
    subset = card(cand[:150], base)
    assert subset["comparison"]["summary"] == ("baseline and candidate scored on the same eval-set version v1: all "
                                               "150 of the candidate's examples shared (the baseline's run holds 250 "
                                               "more)")
    assert subset["comparison"]["summary"] not in subset["reasons"] and subset["overall"]["paired"]["n"] == 150


def test_baseline_without_scores_says_so():
    _, cand = regression_set()
    result = across_versions(cand, [])
    assert result["comparison"]["shared_examples"] == 0 and result["baseline_eval_set_version"] is None
    assert "baseline m:1 has no scores: evaluate it first; no paired comparison was made" in result["reasons"]
    assert result["verdict"] == "inconclusive"
    assert "max drop not evaluated: the baseline has no scores" in result["overall"]["detail"]


def test_thresholds_file_errors_name_the_file_and_field(tmp_path):
    bad = tmp_path / "gates.yaml"
    bad.write_text("overall:\n  max_drop: 2\nslices:\n  intent_routing: {critical: true}\n")
    with pytest.raises(ThresholdsError, match=r"gates.yaml: .*overall.max_drop"):
        load_thresholds(bad)
    bad.write_text("slices:\n  intent_routing: {critical: true}\n")
    with pytest.raises(ThresholdsError, match="not a slice name; expected key=value"):
        load_thresholds(bad)
    default = load_thresholds()
    assert default.slices == {} and default.overall.max_drop == default.default_slice.max_drop == 0.10


def test_the_demo_keeps_its_per_category_gates_in_its_own_file():
    from eval_pipeline.demo.settings import THRESHOLDS as DEMO_THRESHOLDS

    demo = load_thresholds(DEMO_THRESHOLDS)
    assert {name for name, gate in demo.slices.items() if gate.critical} == {"category=intent_routing",
                                                                            "category=extraction"}
    assert demo.slices["category=intent_routing"].floor == 0.40
    # the demo's gates are the packaged ones plus its categories
    default = load_thresholds()
    assert (demo.overall, demo.default_slice, demo.confidence) == (default.overall, default.default_slice,
                                                                    default.confidence)
    # and the rare-intent regression fails under them
    base, cand = regression_set()
    assert card(cand, base, demo)["verdict"] == "fail"
    # shipped in the wheel
    import tomllib
    from pathlib import Path

    config = tomllib.loads((Path(__file__).resolve().parents[3] / "pyproject.toml").read_text(encoding="utf-8"))
    assert "demo/*.yaml" in config["tool"]["setuptools"]["package-data"]["eval_pipeline"]


# --------------------------------------------------------------------------------------------
# the packaged gates on categories nobody wrote down
# --------------------------------------------------------------------------------------------


def unknown_traffic(sizes: dict[str, int], fail_every: int = 8) -> list[dict]:
    """The baseline's rows over categories the thresholds file does not name (every
    ``fail_every``-th example failing)."""
    out = []
    for category, n in sizes.items():
        out += rows(category, ["failed" if i % fail_every == fail_every - 1 else "passed" for i in range(n)])
    return out


SIZES = {"cluster:c0001": 120, "cluster:c0002": 90, "billing_help": 60, "cluster:c0007": 3, "unknown": 1,
         "cluster:unclustered": 26}


def test_default_gates_apply_to_every_category_found_and_small_slices_only_warn():
    gates = load_thresholds()
    base = unknown_traffic(SIZES)
    same = card([dict(r) for r in base], base, gates)
    assert {s["slice"] for s in same["slices"]} == {f"category={c}" for c in SIZES}
    assert all(s["max_drop"] == 0.10 and not s["critical"] for s in same["slices"])
    # the slices of 1 and 3 examples cannot rule out a 10-point drop: reported, never deciding
    tiny = {s["slice"]: s for s in same["slices"]}
    assert tiny["category=unknown"]["status"] == tiny["category=cluster:c0007"]["status"] == "inconclusive"
    assert tiny["category=cluster:c0001"]["status"] == "pass"
    assert same["overall"]["status"] == "pass" and same["verdict"] == "pass"
    assert any(r.startswith("warning (not critical): slice category=unknown inconclusive") for r in same["reasons"])


def test_default_gates_fail_a_regression_spread_over_unnamed_categories():
    gates = load_thresholds()
    base = unknown_traffic(SIZES)
    worse = [dict(r) for r in base]
    for r in [r for r in worse if r["status"] == "passed"][::3]:  # a third of the passes now fail, everywhere
        r["status"] = "failed"
    result = card(worse, base, gates)
    assert result["overall"]["status"] == "fail" and result["verdict"] == "fail"
    assert any(r.startswith("overall fail") for r in result["reasons"])
    assert slice_row(result, "category=cluster:c0001")["status"] == "fail"  # large enough to tell, but only warns
    assert any("warning (not critical): slice category=cluster:c0001 fail" in r for r in result["reasons"])


def test_a_category_with_no_scored_example_or_no_baseline_is_no_crash():
    gates = load_thresholds()
    base = unknown_traffic({"cluster:c0001": 150})
    cand = [dict(r) for r in base] + rows("cluster:c0009", ["not_scored", "not_scored"])
    result = card(cand, base, gates)
    assert slice_row(result, "category=cluster:c0009")["status"] == "not_scored"
    assert result["verdict"] == "pass"
    first = card(unknown_traffic({"cluster:c0001": 150, "unknown": 2}), None, gates)
    assert first["verdict"] == "pass" and {s["status"] for s in first["slices"]} == {"not_gated"}


def test_slice_names():
    assert slice_names('{"category": "rag_qa", "user_segment": "pro"}', ["category", "user_segment"]) == [
        "category=rag_qa", "user_segment=pro"]
    assert slice_names('{"category": "rag_qa", "user_segment": null}', ["category", "user_segment"]) == ["category=rag_qa"]


# --------------------------------------------------------------------------------------------
# tiers
# --------------------------------------------------------------------------------------------


def eval_examples(counts: dict[str, int]) -> list[dict]:
    return [{"example_id": f"{c}-{i:04d}", "category": c, "weight": 2.0} for c, n in counts.items() for i in range(n)]


def test_continuous_tier_is_a_fixed_stratified_subset():
    examples = eval_examples({"intent_routing": 200, "extraction": 120, "rag_qa": 60, "multi_turn": 12, "open_question": 8})
    chosen = select_tier(examples, "continuous", size=150)
    assert len(chosen) == 150
    by_cat = {c: sum(r["category"] == c for r in chosen) for c in ("intent_routing", "extraction", "rag_qa",
                                                                  "multi_turn", "open_question")}
    assert by_cat["open_question"] == 8 and by_cat["multi_turn"] >= 10  # small categories kept (floor of 10)
    assert by_cat["intent_routing"] > by_cat["extraction"] > by_cat["rag_qa"]
    # weights scaled so the subset still stands for all the traffic
    assert sum(r["tier_weight"] for r in chosen) == pytest.approx(sum(r["weight"] for r in examples))
    # the same set gives the same subset, in any order; an example that stays keeps its place
    assert {r["example_id"] for r in select_tier(list(reversed(examples)), "continuous", 150)} == {r["example_id"] for r in chosen}
    grown = examples + eval_examples({"rag_qa_new": 0}) + [{"example_id": "intent_routing-9999", "category": "intent_routing", "weight": 2.0}]
    overlap = {r["example_id"] for r in select_tier(grown, "continuous", 150)} & {r["example_id"] for r in chosen}
    assert len(overlap) >= 148


def test_deep_tier_and_small_sets_run_whole():
    examples = eval_examples({"a": 30, "b": 20})
    assert len(select_tier(examples, "deep")) == 50
    assert len(select_tier(examples, "continuous")) == 50
    with pytest.raises(ValueError, match="100 to 200"):
        select_tier(examples, "continuous", size=50)
    with pytest.raises(ValueError, match="tier must be one of"):
        select_tier(examples, "nightly")


# --------------------------------------------------------------------------------------------
# scoring one output
# --------------------------------------------------------------------------------------------

RUBRICS = load_rubrics()


def judged(status="ok", scores=None, error=None):
    return SimpleNamespace(status=status, scores=scores or {}, justifications={k: "because" for k in (scores or {})},
                           error=error, judge_model="http://127.0.0.1|judge")


@pytest.mark.parametrize("output, status", [("card_arrival", "passed"), ("Card_Arrival.", "passed"),
                                            ("card_delivery_estimate", "failed")])
def test_reference_tasks_pass_on_exact_match(output, status):
    rubric = rubric_for_task(RUBRICS, "intent_routing")
    score = score_output("intent_routing", rubric, output, None, "card_arrival")
    assert score.status == status and score.scorers == ["reference"]
    assert set(score.scores) == {"exact_match", "token_f1", "rouge_l", "bertscore_f1"}
    if status == "failed":  # BERTScore is reported, never the pass rule: a close one does not pass
        assert score.scores["bertscore_f1"] > 0.5


def test_open_ended_without_judge_is_not_scored_and_with_judge_uses_the_rubric():
    rubric = rubric_for_task(RUBRICS, "open_question")
    none = score_output("open_question", rubric, "An answer.", None, None)
    assert none.status == "not_scored" and none.passed is None and "no judge endpoint" in none.reason
    top = {c.id: max(c.allowed_levels) for c in rubric.criteria}
    assert score_output("open_question", rubric, "An answer.", None, None, judged(scores=top)).status == "passed"
    required = rubric.required_criteria[0].id
    assert score_output("open_question", rubric, "x", None, None, judged(scores={**top, required: 0})).status == "failed"
    broken = score_output("open_question", rubric, "x", None, None, judged(status="invalid", error="not JSON"),
                          judge_configured=True)
    assert broken.status == "not_scored" and "not JSON" in broken.reason


def test_provider_error_and_missing_rubric():
    rubric = rubric_for_task(RUBRICS, "intent_routing")
    assert score_output("intent_routing", rubric, None, "HTTP 400: bad request", "card_arrival").status == "error"
    assert score_output("poetry", None, "roses", None, None).status == "not_scored"
    no_ref = score_output("intent_routing", rubric, "card_arrival", None, None)
    assert no_ref.status == "not_scored" and "no reference" in no_ref.reason


def test_an_undefined_detectable_change_is_said_not_left_out():
    tiny = card(rows("intent_routing", ["passed"] * 3), None)
    assert tiny["overall"]["mde"] is None
    assert tiny["overall"]["mde_note"].startswith("n = 3 is too small: no change in pass rate from 1 is detectable")
    assert f"the detectable change is undefined: {tiny['overall']['mde_note']}" in scorecard_text(tiny)
    # no discordant pair: the paired interval still has its width from n, and the MDE is defined
    same = card(rows("intent_routing", ["passed"] * 30), rows("intent_routing", ["passed"] * 30))
    paired = same["overall"]["paired"]
    assert paired["candidate_only"] == paired["baseline_only"] == 0 and paired["p_value"] == 1.0
    assert paired["low"] < -0.1 and paired["high"] > 0.1
    assert same["overall"]["mde"] is not None and same["overall"]["mde_note"] is None


# ---- judge reliability ----------------------------------------------------------------------


def probe_row(probe, group, criterion, flagged, note="") -> dict:
    return {"probe": probe, "group": group, "criterion": criterion, "pairs": 30, "shift": 0.3 if flagged else 0.0,
            "low": 0.15 if flagged else -0.05, "high": 0.45 if flagged else 0.05, "p_value": 0.001,
            "miss_rate": None, "flagged": flagged, "note": note}


def test_judge_flagged_criterion_warns_only_the_slices_the_judge_scores_and_keeps_the_verdict():
    base, cand = regression_set()
    judged = rows("rag_qa", ["passed"] * 30, prefix="rag")
    for r in judged:
        r["rubric"] = "rag_qa"  # scored by the judge with the rag_qa rubric
    reliability = {"month": "2026-01",
                   "probes": [probe_row("length", "rag_qa", "completeness", True, "variant passes more often by 30%"),
                              probe_row("hedging", "rag_qa", "completeness", False),
                              probe_row("planted_error", "intent_routing", "correct_intent", True)],
                   "observed": [{"dimension": "length_quartile", "bin": "Q4 (300-900 chars)", "group": "rag_qa",
                                 "criterion": "answers_question", "pairs": 12, "difference": 0.4, "low": 0.1,
                                 "high": 0.6, "flagged": True, "note": "judge passes more than the humans"}]}
    plain = card(cand + judged, base + judged)
    with_probes = build_scorecard(cand + judged, base + judged, GATES, model="m:2", baseline_model="m:1",
                                  eval_set_version="v1", tier="deep", created_at="2026-12-01T00:00:00Z",
                                  judge_reliability=reliability)
    assert with_probes["verdict"] == plain["verdict"] == "fail" and with_probes["reasons"] == plain["reasons"]
    assert plain["judge_reliability"] is None and plain["warnings"] == []
    warnings = with_probes["warnings"]
    # routing is scored by exact match only (no rubric on its rows): no warning despite its flagged probe;
    # the overall gate holds the judged rag_qa examples, so it is warned first
    assert len(warnings) == 4
    assert all("the overall gate" in w for w in warnings[:2]) and all("slice category=rag_qa" in w for w in warnings[2:])
    assert "criterion completeness is flagged by the length probe" in warnings[2]
    assert "criterion answers_question is flagged by the observed bias (length quartile Q4 (300-900 chars)) probe" \
        in warnings[3]
    assert [f["criterion"] for f in with_probes["judge_reliability"]["flagged"]] == [
        "completeness", "correct_intent", "answers_question"]
    text = scorecard_text(with_probes).splitlines()
    assert [line for line in text if line.startswith("  ! judge reliability: ")] == [f"  ! {w}" for w in warnings]
    assert not [line for line in scorecard_text(plain).splitlines() if line.startswith("  !")]
    # given the rubrics' required criteria, a flagged optional criterion (completeness) warns no gate
    required = build_scorecard(cand + judged, base + judged, GATES, model="m:2", baseline_model="m:1",
                               eval_set_version="v1", tier="deep", created_at="2026-12-01T00:00:00Z",
                               judge_reliability={**reliability, "required": {"rag_qa": ["answers_question"]}})
    assert [w.split(" is scored")[0] for w in required["warnings"]] == [
        "judge reliability: the overall gate", "judge reliability: slice category=rag_qa"]
    assert all("criterion answers_question" in w for w in required["warnings"])
    assert len(required["judge_reliability"]["flagged"]) == 3  # still listed in the report
