"""The scorecard HTML report: content, escaping, the chart's marks, self-containment, and how it renders."""

import re
from html.parser import HTMLParser

import pytest
from browser import external_requests, headless_chrome, require_browser, save_screenshot
from selenium.webdriver.common.by import By

from eval_pipeline.lib.evaluation.report import render_scorecard_html, write_scorecard_report

XSS = "<script>alert(1)</script>"


def slice_row(name, *, critical=False, examples, scored, passed, errors=0, rate_ci=None, baseline=None,
              paired=None, floor=None, max_drop=None, status="pass", detail="", mde=None, needed=None) -> dict:
    low, high = rate_ci if rate_ci else (None, None)
    return {
        "slice": name, "critical": critical, "examples": examples, "scored": scored, "passed": passed,
        "failed": scored - passed, "not_scored": examples - scored - errors, "errors": errors,
        "rate": passed / scored if scored else None, "low": low, "high": high,
        "baseline": baseline, "paired": paired, "floor": floor, "max_drop": max_drop, "status": status,
        "detail": detail, "mde": mde, "needed_examples": needed,
    }


def fail_with_baseline() -> dict:
    """A regression in a critical slice caught against the previous release."""
    routing = slice_row(
        "category=intent_routing", critical=True, examples=60, scored=58, passed=50, errors=2, rate_ci=(0.75, 0.93),
        baseline={"rate": 0.95, "low": 0.86, "high": 0.98, "scored": 58},
        paired={"n": 58, "difference": -0.095, "low": -0.16, "high": -0.039, "p_value": 0.0039, "test": "exact",
                "candidate_only": 0, "baseline_only": 5},
        floor=0.7, max_drop=0.05, status="fail", detail="dropped 9.5 points, beyond its 5.0-point limit",
        mde=0.12, needed=480)
    refunds = slice_row(
        "category=refunds", examples=40, scored=40, passed=36, rate_ci=(0.77, 0.96),
        baseline={"rate": 0.875, "low": 0.74, "high": 0.95, "scored": 40},
        paired={"n": 40, "difference": 0.025, "low": -0.06, "high": 0.11, "p_value": 0.625, "test": "exact",
                "candidate_only": 2, "baseline_only": 1},
        floor=0.6, max_drop=0.1, status="pass", detail="within limits", mde=0.15, needed=310)
    card_fraud = slice_row(
        "category=card_fraud & lang=de", critical=True, examples=22, scored=22, passed=14, rate_ci=(0.43, 0.80),
        baseline={"rate": 0.68, "low": 0.47, "high": 0.84, "scored": 22},
        paired={"n": 22, "difference": -0.045, "low": -0.2, "high": 0.11, "p_value": 1.0, "test": "exact",
                "candidate_only": 1, "baseline_only": 2},
        floor=0.7, max_drop=0.05, status="inconclusive", detail="interval straddles the floor", mde=0.3, needed=1900)
    overall = slice_row(
        "overall", examples=122, scored=120, passed=100, errors=2, rate_ci=(0.756, 0.89),
        baseline={"rate": 0.875, "low": 0.80, "high": 0.92, "scored": 120},
        paired={"n": 120, "difference": -0.042, "low": -0.09, "high": 0.004, "p_value": 0.0703, "test": "exact",
                "candidate_only": 3, "baseline_only": 8},
        status="not_gated", detail="", mde=0.08, needed=None)
    return {
        "model": "support-assistant:2024-06", "baseline": "support-assistant:2024-04",
        "eval_set_version": "v3", "tier": "deep", "created_at": "2026-12-01T19:00:00Z",
        "verdict": "fail",
        "reasons": [("slice category=intent_routing dropped 9.5 points (95% CI -16.0 to -3.9), McNemar p=0.0039: "
                    "beyond its 5.0-point limit")],
        "counts": {"examples": 122, "scored": 120, "passed": 100, "failed": 20, "not_scored": 0, "errors": 2},
        "overall": overall,
        "weighted": {"estimate": 0.83, "low": 0.76, "high": 0.88, "n_eff": 95.2},
        "worst_slice": "category=intent_routing",
        "slices": [routing, refunds, card_fraud],
    }


def first_evaluation() -> dict:
    """No baseline yet: floors only, and a slice whose name is markup."""
    billing = slice_row("category=billing", critical=True, examples=80, scored=80, passed=74, rate_ci=(0.85, 0.97),
                        floor=0.8, status="pass", detail="above its floor", mde=0.1, needed=None)
    hostile = slice_row(XSS, examples=30, scored=30, passed=27, rate_ci=(0.74, 0.97), status="not_gated",
                        detail='named by a "user" & not trusted', mde=0.2, needed=700)
    overall = slice_row("overall", examples=110, scored=110, passed=101, rate_ci=(0.85, 0.96), status="not_gated")
    return {
        "model": "support-assistant:2024-04", "baseline": None,
        "eval_set_version": "v2", "tier": "continuous", "created_at": "2026-11-02T08:30:00Z",
        "verdict": "pass", "reasons": ["first evaluation: every slice with a floor is above it"],
        "counts": {"examples": 110, "scored": 110, "passed": 101, "failed": 9, "not_scored": 0, "errors": 0},
        "overall": overall, "weighted": None, "worst_slice": XSS,
        "slices": [billing, hostile],
    }


def with_unscored_slice() -> dict:
    """A slice nobody has labelled yet, and scoring errors elsewhere."""
    labelled = slice_row(
        "category=top_up", examples=50, scored=44, passed=39, errors=3, rate_ci=(0.76, 0.95),
        baseline={"rate": 0.86, "low": 0.73, "high": 0.94, "scored": 44},
        paired={"n": 44, "difference": 0.023, "low": -0.07, "high": 0.12, "p_value": 0.727, "test": "exact",
                "candidate_only": 3, "baseline_only": 2},
        max_drop=0.05, status="inconclusive", detail="interval too wide to rule out a 5-point drop",
        mde=0.16, needed=960)
    unlabelled = slice_row("cluster=17 (new)", critical=True, examples=25, scored=0, passed=0, floor=0.7,
                           status="not_scored", detail="no labels yet")
    overall = slice_row(
        "overall", examples=75, scored=44, passed=39, errors=3, rate_ci=(0.76, 0.95),
        baseline={"rate": 0.86, "low": 0.73, "high": 0.94, "scored": 44},
        paired={"n": 44, "difference": 0.023, "low": -0.07, "high": 0.12, "p_value": 0.727, "test": "exact",
                "candidate_only": 3, "baseline_only": 2},
        status="not_gated")
    return {
        "model": "support-assistant:2024-07", "baseline": "support-assistant:2024-06",
        "eval_set_version": "v4", "tier": "deep", "created_at": "2026-12-15T10:00:00Z",
        "verdict": "inconclusive",
        "reasons": ["critical slice cluster=17 (new) has no scored examples",
                    "slice category=top_up: interval too wide to rule out a 5-point drop"],
        "counts": {"examples": 75, "scored": 44, "passed": 39, "failed": 5, "not_scored": 28, "errors": 3},
        "overall": overall,
        "weighted": {"estimate": 0.88, "low": 0.78, "high": 0.94, "n_eff": 38.4},
        "worst_slice": "category=top_up",
        "slices": [labelled, unlabelled],
    }


SCORECARDS = [fail_with_baseline, first_evaluation, with_unscored_slice]


class _Collector(HTMLParser):
    """Every start tag with its attributes, and the page's visible text."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def parse(page: str) -> _Collector:
    collector = _Collector()
    collector.feed(page)
    collector.close()
    return collector


def rows_of(card: dict) -> list[dict]:
    return [card["overall"], *card["slices"]]


@pytest.mark.parametrize("make", SCORECARDS)
def test_verdict_reasons_and_every_slice_are_on_the_page(make):
    card = make()
    page = render_scorecard_html(card)
    doc = parse(page)
    text = "".join(doc.text)

    assert f"Scorecard: {card['model']}" in text
    banner = re.search(r'<section class="verdict verdict-(\w+)"', page)
    assert banner and banner.group(1) == card["verdict"]
    assert f"Verdict: {card['verdict']}" in text
    for reason in card["reasons"]:
        assert reason in text
    table_rows = [a["data-slice"] for tag, a in doc.tags if tag == "tr" and "data-slice" in a]
    chart_rows = [a["data-slice"] for tag, a in doc.tags if tag == "g" and a.get("class") == "row"]
    assert table_rows == chart_rows == ["overall", *(s["slice"] for s in card["slices"])]
    assert f"{card['eval_set_version']}" in text and card["tier"] in text and card["created_at"] in text


def test_numbers_are_formatted_as_percentages_and_p_values():
    page = render_scorecard_html(fail_with_baseline())
    text = "".join(parse(page).text)
    assert "86.2% [75.0%, 93.0%]" in text  # 50/58 with its interval
    assert "95.0% [86.0%, 98.0%]" in text  # the baseline
    assert "-9.5 pts [-16.0, -3.9]" in text and "+2.5 pts [-6.0, +11.0]" in text
    assert "0.00390" in text and "0.625" in text and "1.00" in text
    assert "83.0%" in text and "effective n 95.2" in text  # traffic-weighted
    assert "Worst slice" in text and "category=intent_routing" in text
    assert "122 examples" in text and "120 scored" in text and "2 errors" in text
    for status in ("fail", "pass", "inconclusive", "not_gated"):
        assert f'class="badge badge-{status}"' in page


def test_missing_values_show_as_en_dash_and_no_baseline_is_said():
    card = first_evaluation()
    doc = parse(render_scorecard_html(card))
    text = "".join(doc.text)
    assert "Baseline: none (first evaluation)" in text
    billing_cells = _cells(render_scorecard_html(card), "category=billing")
    # slice, critical, scored/examples, rate, baseline, difference, p, floor, max drop, status, detail, mde, needed
    assert billing_cells[1] == "yes" and billing_cells[2] == "80 / 80"
    assert billing_cells[4:7] == ["\u2013"] * 3 and billing_cells[8] == "\u2013" and billing_cells[12] == "\u2013"
    assert billing_cells[7] == "80.0%"


def _cells(page: str, slice_name: str) -> list[str]:
    """The text of each cell of the table row for one slice."""
    row = re.search(r'<tr[^>]*data-slice="' + re.escape(slice_name) + r'">(.*?)</tr>', page, re.DOTALL).group(1)
    return [re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.DOTALL)]


def test_markup_in_data_is_escaped_everywhere():
    page = render_scorecard_html(first_evaluation())
    assert XSS not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script" not in page.lower()
    assert "named by a &quot;user&quot; &amp; not trusted" in page
    # the escaped name still reads back as the slice name
    doc = parse(page)
    assert XSS in [a.get("data-slice") for tag, a in doc.tags if tag == "tr"]
    assert XSS in "".join(doc.text)


@pytest.mark.parametrize("make", SCORECARDS)
def test_chart_marks_one_dot_per_scored_slice_and_one_per_baseline(make):
    card = make()
    doc = parse(render_scorecard_html(card))
    svgs = [a for tag, a in doc.tags if tag == "svg"]
    assert len(svgs) == 1
    candidates = [a["data-slice"] for tag, a in doc.tags if a.get("class") == "marker-candidate"]
    baselines = [a["data-slice"] for tag, a in doc.tags if a.get("class") == "marker-baseline"]

    def names(rows):
        return ["overall" if r is card["overall"] else r["slice"] for r in rows]

    assert candidates == names([r for r in rows_of(card) if r["scored"]])
    assert baselines == names([r for r in rows_of(card) if r["baseline"]])
    assert all(tag == "circle" for tag, a in doc.tags if a.get("class") == "marker-candidate")
    assert all(tag == "path" for tag, a in doc.tags if a.get("class") == "marker-baseline")
    floors = [a for tag, a in doc.tags if tag == "line" and a.get("class") == "floor"]
    assert len(floors) == sum(r["floor"] is not None for r in rows_of(card))
    grid_labels = [t for t in doc.text if re.fullmatch(r"\d+%", t)]
    assert grid_labels == [f"{10 * i}%" for i in range(11)]
    text = "".join(doc.text)
    assert text.count("not scored") >= sum(1 for r in rows_of(card) if not r["scored"])


def test_unscored_slice_is_labelled_and_not_scored_note_lists_it():
    card = with_unscored_slice()
    page = render_scorecard_html(card)
    chart_row = re.search(r'<g class="row" data-slice="cluster=17 \(new\)">(.*?)</g>', page, re.DOTALL).group(1)
    assert ">not scored</text>" in chart_row and "marker-candidate" not in chart_row
    note = page.split("<h2>Not scored / errors</h2>", 1)[1]
    assert "28 of 75 examples were not scored (no scorer applies) and the model gave no output for 3" in note
    assert "The model gave no output for 2 of 122 examples" in render_scorecard_html(fail_with_baseline())
    assert "cluster=17 (new): 25 not scored, 0 errors" in note
    assert "category=top_up: 3 not scored, 3 errors" in note
    assert 'class="badge badge-not_scored">not scored<' in page


@pytest.mark.parametrize("make", SCORECARDS)
def test_page_is_self_contained(make):
    page = render_scorecard_html(make())
    lowered = page.lower()
    for forbidden in ("<script", "<link", "@import", "url("):
        assert forbidden not in lowered
    for _tag, attrs in parse(page).tags:
        for name in ("src", "href", "xlink:href", "srcset", "action"):
            value = (attrs.get(name) or "").strip().lower()
            assert not value.startswith(("http://", "https://", "//")), (name, value)
    assert "<style>" in page and "<svg" in page


def across_versions() -> dict:
    """The regression of :func:`fail_with_baseline`, its baseline's scores on the eval set before."""
    card = fail_with_baseline()
    summary = "baseline scored on v2, candidate on v3: paired on 120 shared examples (2 only in v3, 9 only in v2)"
    card["baseline_eval_set_version"] = "v2"
    card["comparison"] = {"candidate_version": "v3", "baseline_version": "v2", "same_version": False,
                          "shared_examples": 120, "candidate_only_examples": 2, "baseline_only_examples": 9,
                          "summary": summary}
    card["reasons"].append(summary)
    return card


def test_header_states_both_eval_set_versions_and_the_shared_examples():
    card = across_versions()
    page = render_scorecard_html(card)
    header = page.split('<section class="headline">', 1)[0]  # before the figures
    text = "".join(parse(header).text)
    assert "Eval set: v3" in text and "Baseline's eval set: v2" in text
    section = re.search(r'<section class="comparison comparison-partial" id="comparison">(.*?)</section>', page,
                        re.DOTALL)
    assert section and card["comparison"]["summary"] in "".join(parse(section.group(1)).text)
    assert "are over the paired examples" in section.group(1)
    # each difference says how many pairs it is over; the legend says the baseline's dots are on v2
    assert "-9.5 pts [-16.0, -3.9] 58 paired" in " ".join("".join(parse(page).text).split())
    assert "baseline support-assistant:2024-04 (v2, shared examples)" in page

    same = fail_with_baseline()
    same["baseline_eval_set_version"] = "v3"
    same["comparison"] = {"candidate_version": "v3", "baseline_version": "v3", "same_version": True,
                          "shared_examples": 122, "candidate_only_examples": 0, "baseline_only_examples": 0,
                          "summary": "baseline and candidate scored on the same eval-set version v3: all 122 examples "
                                     "shared"}
    page = render_scorecard_html(same)
    assert '<section class="comparison" id="comparison">' in page
    assert 'class="comparison comparison-partial"' not in page
    assert "all 122 examples shared" in page and "Baseline&#x27;s eval set: v3" in page
    # a scorecard written before versions were compared still renders, without the section
    assert 'id="comparison"' not in render_scorecard_html(fail_with_baseline())
    assert "Baseline&#x27;s eval set" not in render_scorecard_html(first_evaluation())


def test_write_creates_folders_and_writes_utf8(tmp_path):
    card = fail_with_baseline()
    path = write_scorecard_report(card, tmp_path / "reports" / "nested" / "scorecard.html")
    assert path.exists()
    assert path.read_text(encoding="utf-8") == render_scorecard_html(card)
    assert "\u2013".encode("utf-8") in path.read_bytes()  # the en dash of a missing value, as UTF-8


def test_report_renders_in_headless_chromium(tmp_path):
    require_browser()
    card = fail_with_baseline()
    path = write_scorecard_report(card, tmp_path / "scorecard.html")
    with headless_chrome() as driver:
        driver.get(path.resolve().as_uri())
        assert driver.title == f"Scorecard: {card['model']}"
        heading = driver.find_element(By.TAG_NAME, "h1")
        assert heading.is_displayed() and heading.text == f"Scorecard: {card['model']}"
        banner = driver.find_element(By.ID, "verdict")
        assert banner.is_displayed()
        assert "VERDICT: FAIL" in banner.text.upper() and card["reasons"][0] in banner.text
        # the banner is coloured (the red of a failing verdict), not left at the default
        assert banner.value_of_css_property("background-color") not in ("rgba(0, 0, 0, 0)", "transparent")
        svg = driver.find_element(By.CSS_SELECTOR, "#chart svg")
        assert svg.is_displayed() and svg.size["width"] > 400 and svg.size["height"] > 100
        dots = driver.find_elements(By.CSS_SELECTOR, "#chart circle.marker-candidate")
        assert len(dots) == 4 and all(d.size["width"] > 0 for d in dots)
        table_rows = driver.find_elements(By.CSS_SELECTOR, "#slices tbody tr")
        assert [r.get_attribute("data-slice") for r in table_rows] == ["overall"] + [s["slice"] for s in card["slices"]]
        assert external_requests(driver) == []
        shot = save_screenshot(driver, "scorecard_report")
    assert shot.name == "scorecard_report.png" and shot.exists()
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5 * 1024


def test_external_requests_sees_loaded_and_failed_requests(tmp_path):
    """The helper itself: a page that reaches out is caught, even when the request fails."""
    require_browser()
    page = tmp_path / "leaky.html"
    page.write_text('<!DOCTYPE html><html><head><title>leaky</title></head><body>'
                    '<img src="http://assets.example.invalid/pixel.png" alt="">'
                    '<img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=" alt=""></body></html>', encoding="utf-8")
    with headless_chrome() as driver:
        driver.get(page.resolve().as_uri())
        assert external_requests(driver) == ["http://assets.example.invalid/pixel.png"]


def test_missing_browser_skips_unless_the_environment_requires_it(monkeypatch, tmp_path):
    import browser

    monkeypatch.setattr(browser, "CHROMEDRIVER", tmp_path / "no-chromedriver")
    monkeypatch.delenv(browser.REQUIRE_BROWSER_ENV, raising=False)
    assert not browser.chromium_available()
    with pytest.raises(pytest.skip.Exception, match="no-chromedriver missing"):
        browser.require_browser()
    monkeypatch.setenv(browser.REQUIRE_BROWSER_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match="EVAL_PIPELINE_REQUIRE_BROWSER is set but .*no-chromedriver"):
        browser.require_browser()


def test_judge_reliability_section_without_and_with_probe_results():
    card = fail_with_baseline()
    page = render_scorecard_html(card)
    section = re.search(r'<section id="judge-reliability">(.*?)</section>', page, re.DOTALL).group(1)
    assert "<h2>Judge reliability</h2>" in section
    assert "No probe results: run <code>eval-pipeline probe-judge</code>" in section
    card["judge_reliability"] = {
        "month": "2026-01", "flagged": [],
        "probes": [{"probe": "length", "group": "rag_qa", "criterion": "completeness", "pairs": 30,
                    "original_rate": 0.5, "variant_rate": 0.8, "shift": 0.3, "low": 0.12, "high": 0.45,
                    "p_value": 0.0012, "miss_rate": None, "miss_low": None, "miss_high": None, "flagged": True,
                    "note": "variant passes more often by 30% (interval above 0)"},
                   {"probe": "planted_error", "group": "rag_qa", "criterion": "grounded_in_context", "pairs": 30,
                    "original_rate": 0.8, "variant_rate": 0.1, "shift": -0.7, "low": -0.85, "high": -0.5,
                    "p_value": 0.0001, "miss_rate": 0.125, "miss_low": 0.04, "miss_high": 0.31, "flagged": True,
                    "note": XSS}],
        "observed": [{"dimension": "hedges", "bin": "hedged", "group": "rag_qa", "criterion": "completeness",
                      "pairs": 14, "difference": 0.2, "low": -0.05, "high": 0.4, "flagged": False}]}
    card["warnings"] = ["judge reliability: slice category=refunds is scored by the judge with rubric rag_qa, whose "
                        "criterion completeness is flagged by the length probe"]
    page = render_scorecard_html(card)
    section = re.search(r'<section id="judge-reliability">(.*?)</section>', page, re.DOTALL).group(1)
    assert "No probe results" not in section and XSS not in page
    rows = re.findall(r"<tr( class=\"flagged\")?><td>(length|planted_error)</td>", section)
    assert rows == [(' class="flagged"', "length"), (' class="flagged"', "planted_error")]
    assert "+30.0 pts <span class=\"ci\">[+12.0, +45.0]</span>" in section
    assert "12.5% [4.0%, 31.0%]" in section  # the planted errors the judge still passed
    assert "<td>hedges</td><td>hedged</td>" in section and "+20.0 pts" in section
    assert "<li>judge reliability: slice category=refunds" in section
