"""What a person sees: the Dagster UI (`eval-pipeline ui`) and the scorecard HTML report, in headless Chromium.

A candidate that misroutes the rare intents is evaluated against its baseline on a small data home;
then the browser opens the HTML report the evaluation wrote, the global asset lineage graph, and
the scorecard partition of the candidate with its materialization metadata. Screenshots of the three
pages land in ``artifacts/screenshots``.

The report is read before ``dagster dev`` starts, in the same browser session; the versions were
evaluated in the UI's instance, so the registry sensor's first tick skips them.
"""

import time
import urllib.parse
import urllib.request
from datetime import datetime
from pathlib import Path

import duckdb
import polars as pl
from browser import external_requests, headless_chrome, require_browser, save_screenshot
from dagster_dev import dagster_dev, graphql
from evaluation_fixtures import evaluation_home, register
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from eval_pipeline.defs.labeling.assets import JUDGE_BIAS_PROBES
from eval_pipeline.demo.settings import THRESHOLDS as DEMO_THRESHOLDS
from eval_pipeline.runs import evaluate_model

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PAGE_TIMEOUT = 60
# Asset nodes of the lineage graph are HTML inside the graph's <svg> (in <foreignObject>s); the
# explorer's sidebar lists group names only, outside the svg.
GRAPH_NODE_NAMES = ("//*[local-name()='svg']//*[local-name()='foreignObject']"
                    "//div[contains(@class, 'AssetNode_assetName')]")
# Edges are <path>s of the graph's svg drawn in the lineage edge colour (arrowheads are filled, not stroked).
GRAPH_EDGES = ("//*[local-name()='svg']//*[local-name()='path'][not(ancestor::*[local-name()='foreignObject'])]"
               "[contains(@stroke, 'lineage-edge')]")


def _asset_nodes(base: str) -> tuple[dict[str, str], int]:
    """(asset name -> group name, number of dependencies between assets), from the webserver's GraphQL."""
    nodes = graphql(base, "{ assetNodes { assetKey { path } groupName dependencyKeys { path } } }")["data"]["assetNodes"]
    return ({"/".join(node["assetKey"]["path"]): node["groupName"] for node in nodes},
            sum(len(node["dependencyKeys"]) for node in nodes))


def _wait(driver, condition, what: str):
    """WebDriverWait that names what it waited for, and shows the page's text, when it gives up."""
    try:
        return WebDriverWait(driver, PAGE_TIMEOUT, poll_frequency=0.25,
                             ignored_exceptions=(StaleElementReferenceException,)).until(condition)
    except TimeoutException:
        text = driver.find_element(By.TAG_NAME, "body").text[:2000]
        raise AssertionError(f"{what}: not there after {PAGE_TIMEOUT} s on {driver.current_url}\npage text:\n{text}")


def _graph_nodes(driver) -> dict[str, object]:
    """Asset name -> its rendered node in the lineage graph (only nodes the browser laid out)."""
    return {el.text.strip(): el for el in driver.find_elements(By.XPATH, GRAPH_NODE_NAMES)
            if el.size["width"] > 0 and el.size["height"] > 0}


def _settled(driver, element_of):
    """A condition true once an element's position and size are the same on two polls in a row
    (the graph zooms to fit after its layout arrives)."""
    last = {}

    def condition(d):
        rect = element_of(d).rect
        stable = rect == last.get("rect")
        last["rect"] = rect
        return stable
    return condition


def _metadata_value(driver, key: str) -> str | None:
    """The value cell of one row of the materialization's metadata table, or None while absent."""
    cells = driver.find_elements(By.XPATH, f"//tr[td[1][normalize-space()='{key}']]/td[2]")
    return cells[0].text.strip() if cells else None


def _assert_png(path: Path) -> None:
    assert path.is_file(), path
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    assert len(data) > 5 * 1024, f"{path} is only {len(data)} bytes"


def write_probe_rows(home) -> None:
    """Two rows of ``labeling.judge_bias_probes`` for January: a flagged planted-error row and a
    clean length row."""
    common = {"month_start": datetime(2026, 1, 1), "eval_set_version": "v1", "pairs": 30, "skipped": 0,
              "p_value": 0.001, "miss_low": None, "miss_high": None, "miss_rate": None}
    rows = [{**common, "probe": "planted_error", "group": "intent_routing", "criterion": "correct_intent",
             "original_rate": 0.9, "variant_rate": 0.6, "shift": -0.3, "low": -0.45, "high": -0.15,
             "miss_rate": 0.67, "miss_low": 0.48, "miss_high": 0.81, "flagged": True,
             "note": "judge still passes 18 of 27 planted errors"},
            {**common, "probe": "length", "group": "rag_qa", "criterion": "completeness", "original_rate": 0.7,
             "variant_rate": 0.7, "shift": 0.0, "low": -0.08, "high": 0.08, "flagged": False, "note": "no shift"}]
    df = pl.DataFrame(rows, schema=JUDGE_BIAS_PROBES)  # noqa: F841 - read in SQL
    with duckdb.connect(str(home.warehouse)) as con:
        con.execute("create schema if not exists labeling")
        con.execute("create table labeling.judge_bias_probes as select * from df")


def test_dagster_ui_and_scorecard_report_render_in_a_browser(tmp_path, monkeypatch):
    require_browser()
    started = time.monotonic()

    # a failing candidate, evaluated on the data home's persistent instance (baseline first)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "unused"))  # unused: evaluate_model opens the home's instance
    home, _, _ = evaluation_home(tmp_path / "home")
    write_probe_rows(home)  # the judge bias probes of a month, as the probes asset leaves them
    register(home, "1", "baseline", provider="recorded", recorded_path=str(home.recordings / "baseline.jsonl"))
    register(home, "2", "candidate", provider="recorded", recorded_path=str(home.recordings / "regressed.jsonl"))
    outcome = evaluate_model(home, "router:2", thresholds=str(DEMO_THRESHOLDS), log=lambda *_: None)
    assert outcome.error is None, outcome.error
    assert outcome.baseline == "router:1" and len(outcome.run_ids) == 2
    card = outcome.scorecard
    assert card["verdict"] == "fail"
    assert card["worst_slice"] == "category=intent_routing"
    assert outcome.report is not None and outcome.report.is_file()

    shots = []
    with headless_chrome() as driver:
        # --- the HTML report, from the file the evaluation wrote -------------------------------
        driver.get(outcome.report.resolve().as_uri())
        assert driver.title == "Scorecard: router:2"
        banner = driver.find_element(By.ID, "verdict")
        assert banner.is_displayed() and "verdict: fail" in banner.text.lower()
        assert "category=intent_routing" in banner.text  # the reason names the regressed slice
        assert "verdict-fail" in banner.get_attribute("class")
        chart = driver.find_element(By.CSS_SELECTOR, "#chart svg")
        assert chart.is_displayed() and chart.size["width"] > 400 and chart.size["height"] > 100
        dots = driver.find_elements(By.CSS_SELECTOR, "#chart circle.marker-candidate")
        scored = [row["slice"] for row in [card["overall"], *card["slices"]] if row["scored"]]
        assert [d.get_attribute("data-slice") for d in dots] == scored
        assert all(d.size["width"] > 0 and d.size["height"] > 0 for d in dots)
        rows = driver.find_elements(By.CSS_SELECTOR, "#slices tbody tr[data-slice='category=intent_routing']")
        assert len(rows) == 1 and "fail" in rows[0].text
        # the judge-reliability section: the probe table with the flagged row marked; routing is
        # scored by exact match only, so its flagged judge criterion gives no gate warning
        section = driver.find_element(By.ID, "judge-reliability")
        assert section.find_element(By.TAG_NAME, "h2").text == "Judge reliability"
        flagged = section.find_elements(By.CSS_SELECTOR, "#judge-probes tbody tr.flagged")
        assert len(flagged) == 1 and "intent_routing.correct_intent" in flagged[0].text and flagged[0].is_displayed()
        assert len(section.find_elements(By.CSS_SELECTOR, "#judge-probes tbody tr")) == 2
        assert "No gate warned: no gate is scored by the judge with a flagged required criterion." in section.text
        assert card["warnings"] == [] and len(card["judge_reliability"]["flagged"]) == 1
        assert external_requests(driver) == []
        shots.append(save_screenshot(driver, "scorecard_report_demo"))

        # --- the Dagster UI on the same home ----------------------------------------------------
        with dagster_dev(home.root, tmp_path / "dagster-dev.log") as base:
            groups, dependencies = _asset_nodes(base)
            assert {"eval_set", "candidate_outputs", "candidate_scores", "scorecard"} <= set(groups)

            # the "Join the Dagster community" dialog of a localhost UI would cover the page: dismiss it
            # for this browser profile only (what its Skip button stores), not on the server
            driver.get(f"{base}/server_info")
            driver.execute_script("window.localStorage.setItem('communityNux', JSON.stringify('1'));")

            # the global asset lineage, every group expanded (the UI collapses them when there are many)
            expanded = ",".join(f"global@global:{g}" for g in sorted(set(groups.values())))
            driver.get(f"{base}/asset-groups?{urllib.parse.urlencode({'expanded': expanded})}")
            _wait(driver, lambda d: "Global asset lineage" in d.find_element(By.TAG_NAME, "body").text,
                  "the lineage page heading")
            _wait(driver, lambda d: set(groups) <= set(_graph_nodes(d)), f"graph nodes for all {len(groups)} assets")
            _wait(driver, _settled(driver, lambda d: _graph_nodes(d)["scorecard"]), "the graph to stop moving")
            nodes = _graph_nodes(driver)
            assert set(nodes) == set(groups), sorted(set(nodes) ^ set(groups))
            width, height = driver.execute_script("return [window.innerWidth, window.innerHeight];")
            for name in ("eval_set", "candidate_outputs", "candidate_scores", "scorecard"):
                box = nodes[name].rect
                assert 0 <= box["x"] < width and 0 <= box["y"] < height, f"{name} is off screen: {box}"
            # lineage: one edge per dependency between assets
            edges = driver.find_elements(By.XPATH, GRAPH_EDGES)
            assert len(edges) == dependencies > 0
            assert "Join the Dagster community" not in driver.find_element(By.TAG_NAME, "body").text
            shots.append(save_screenshot(driver, "dagster_asset_graph"))

            # the candidate's scorecard partition and the metadata of its latest materialization
            partition = urllib.parse.quote("router:2", safe="")
            driver.get(f"{base}/assets/scorecard?view=partitions&partition={partition}")
            _wait(driver, lambda d: _metadata_value(d, "verdict") is not None, "the scorecard's metadata table")
            body = driver.find_element(By.TAG_NAME, "body").text
            assert "router:1" in body and "router:2" in body  # both partitions listed
            assert _metadata_value(driver, "verdict") == card["verdict"] == "fail"
            assert _metadata_value(driver, "worst_slice") == card["worst_slice"]
            assert _metadata_value(driver, "baseline") == "router:1"
            assert _metadata_value(driver, "tier") == "deep"
            assert _metadata_value(driver, "report") == str(outcome.report)
            slices = _metadata_value(driver, "slices") or ""
            assert "category=intent_routing" in slices and "fail" in slices
            # router:2 is both in the partition list and the header of the selected partition's panel
            assert len(driver.find_elements(By.CSS_SELECTOR, "[title='router:2']")) == 2
            assert "Latest materialization" in body
            shots.append(save_screenshot(driver, "dagster_scorecard_asset"))

    assert [s.name for s in shots] == ["scorecard_report_demo.png", "dagster_asset_graph.png",
                                       "dagster_scorecard_asset.png"]
    for shot in shots:
        _assert_png(shot)
    assert time.monotonic() - started < 120  # the whole check: evaluation, UI start, three pages
