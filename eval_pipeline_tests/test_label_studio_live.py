"""The annotation round trip through a real Label Studio server on 127.0.0.1.

The eval set of ``test_labeling_assets`` (nine examples of two rubrics) goes through the real
``annotation_tasks`` asset; ``eval-pipeline labels push`` creates the rubrics' projects and imports
the tasks (twice: the second push adds nothing); two users of the server annotate every task
through its API, disagreeing on some; ``eval-pipeline labels pull`` lands the exports in the inbox,
the inbox sensor asks for a run, and ``labeling_job`` turns them into human labels and agreement,
checked against Cohen's kappa computed here by scikit-learn from what was submitted.
"""

from __future__ import annotations

import json
import os
import socket
import time

import dagster as dg
import polars as pl
import pytest
from defs.test_labeling_assets import EXAMPLES, MONTH, assets, labeled_home, table  # noqa: F401 - a fixture
from label_studio_sdk.client import LabelStudio
from label_studio_server import REQUIRE_ENV, Unavailable, ensure_venv, start_server
from sklearn.metrics import cohen_kappa_score

from eval_pipeline.cli import main
from eval_pipeline.defs.labeling.sensors import labels_sensor
from eval_pipeline.defs.resources import PipelineSettings, build_resources
from eval_pipeline.definitions import build_definitions
from eval_pipeline.lib.annotation import REFERENCE_FIELD, criterion_levels
from eval_pipeline.lib.rubrics import load_rubrics

RUBRIC_OF = {"intent_routing": "intent_routing", "rag_qa": "rag_qa"}  # task type -> rubric of the packaged set


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory):
    try:
        exe, built_in = ensure_venv()
    except Unavailable as err:
        if os.environ.get(REQUIRE_ENV):
            pytest.fail(f"the Label Studio server's environment could not be built: {err}")
        pytest.skip(f"the Label Studio server's environment could not be built: {err}")
    server = start_server(tmp_path_factory.mktemp("label-studio"), exe)
    server.timings["venv_build"] = built_in
    print(f"\nlabel studio timings (s): {json.dumps({k: round(v, 1) for k, v in server.timings.items()})}")
    try:
        yield server
    finally:
        server.stop()


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def scores_for(index: int, criterion_index: int, levels: list[int], second: bool) -> int:
    """Annotator one cycles through the levels; annotator two agrees except on every third task."""
    shift = 1 if second and index % 3 == 0 else 0
    return levels[(index + criterion_index + shift) % len(levels)]


def test_push_annotate_pull_gives_the_annotators_agreement(labeled_home, label_studio, capsys, monkeypatch):  # noqa: F811
    home, server = labeled_home, label_studio
    started = time.monotonic()
    dg.materialize(assets(home), resources=build_resources(home), partition_key=MONTH, selection=["annotation_tasks"])
    monkeypatch.setenv("LABEL_STUDIO_URL", server.url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", server.owner.token)

    code, out, err = cli(capsys, "labels", "push", "--home", str(home.root))
    assert code == 0, err
    assert "eval set v1: 9 examples in 2 projects" in out and out.count("created") == 2
    owner = LabelStudio(base_url=server.url, api_key=server.owner.token)
    projects = {p.title: p for p in owner.projects.list() if p.title.startswith("eval-pipeline ")}
    assert set(projects) == {"eval-pipeline intent_routing", "eval-pipeline rag_qa"}
    outbox = home.labels_outbox / "v1" / "label_studio"
    tasks = {}
    for task_type, rubric in RUBRIC_OF.items():
        project = owner.projects.get(projects[f"eval-pipeline {rubric}"].id)
        assert project.label_config.strip() == (outbox / f"{rubric}.config.xml").read_text().strip()
        tasks[rubric] = sorted(owner.tasks.list(project=project.id, fields="all"), key=lambda t: t.data["example_id"])
        assert [t.data["example_id"] for t in tasks[rubric]] == sorted(e for e, t in EXAMPLES.items() if t == task_type)

    # a second push finds the projects and imports nothing
    code, out, err = cli(capsys, "labels", "push", "--home", str(home.root))
    assert code == 0, err
    assert out.count("0 tasks imported, ") == 2 and "created" not in out
    for rubric in RUBRIC_OF.values():
        assert len(list(owner.tasks.list(project=projects[f"eval-pipeline {rubric}"].id))) == len(tasks[rubric])

    # two annotators, each through the API with their own token
    clients = {}
    for user in (server.owner, server.second):
        client = LabelStudio(base_url=server.url, api_key=user.token)
        clients[f"user-{client.users.whoami().id}"] = client  # how the reader names an export's completed_by
    first_name, second_name = sorted(clients, key=lambda n: n != f"user-{owner.users.whoami().id}")
    rubrics = load_rubrics()
    submitted: dict[tuple[str, str], dict[str, dict[str, int]]] = {}
    for rubric_name, rubric_tasks in tasks.items():
        rubric = rubrics[rubric_name]
        for i, task in enumerate(rubric_tasks):
            for name in (first_name, second_name):
                result = []
                for j, criterion in enumerate(rubric.criteria):
                    score = scores_for(i, j, criterion_levels(criterion), second=name == second_name)
                    submitted.setdefault((rubric_name, criterion.id), {}).setdefault(task.data["example_id"], {})[name] = score
                    result.append({"from_name": criterion.id, "to_name": "output", "type": "choices",
                                   "value": {"choices": [str(score)]}})
                if rubric.has_reference:
                    result.append({"from_name": REFERENCE_FIELD, "to_name": "output", "type": "textarea",
                                   "value": {"text": [task.data["output"]]}})
                clients[name].annotations.create(id=task.id, result=result)

    code, out, err = cli(capsys, "labels", "pull", "--home", str(home.root))
    assert code == 0, err
    n_annotations = 2 * sum(len(t) for t in tasks.values())
    assert f"9 tasks, {n_annotations} annotations, 2 annotators ({', '.join(sorted(clients))})" in out
    files = sorted(p.name for p in home.labels_inbox.iterdir())
    assert files == ["label_studio_intent_routing.json", "label_studio_rag_qa.json"]
    for path in home.labels_inbox.iterdir():
        text = path.read_text()
        assert server.owner.token not in text and server.second.token not in text
        assert len(json.loads(text)) == len(tasks[path.stem.removeprefix("label_studio_")])
    assert server.owner.token not in out + err

    settings = PipelineSettings(home=str(home.root))
    request = labels_sensor(dg.build_sensor_context(resources={"settings": settings}))
    assert isinstance(request, dg.RunRequest)
    # pulling again changes nothing the sensor looks at
    mtimes = {p.name: p.stat().st_mtime_ns for p in home.labels_inbox.iterdir()}
    code, out, err = cli(capsys, "labels", "pull", "--home", str(home.root))
    assert code == 0 and out.count("(unchanged)") == 2, err
    assert {p.name: p.stat().st_mtime_ns for p in home.labels_inbox.iterdir()} == mtimes

    run = build_definitions(home).resolve_job_def("labeling_job").execute_in_process(
        instance=dg.DagsterInstance.ephemeral())
    assert run.success
    labels = table(home, "select * from labeling.human_labels")
    assert set(labels["annotator"]) == set(clients)
    assert labels.height == sum(len(by_annotator) for items in submitted.values() for by_annotator in items.values())
    assert table(home, "select count(*) n from labeling.label_quarantine")["n"][0] == 0
    agreement = table(home, "select * from labeling.label_agreement")
    assert agreement.height == len(submitted)
    defined = 0
    for row in agreement.iter_rows(named=True):
        items = submitted[(row["group"], row["criterion"])]
        assert row["method"] == "cohens_kappa" and row["n_annotators"] == 2 and row["n_items"] == len(items)
        if len(items) < 5:  # rag_qa has four examples: too few for a kappa, and said so
            assert row["value"] is None and "only 4 items" in row["note"]
            continue
        criterion = next(c for c in rubrics[row["group"]].criteria if c.id == row["criterion"])
        xs = [items[e][first_name] for e in sorted(items)]
        ys = [items[e][second_name] for e in sorted(items)]
        expected = cohen_kappa_score(xs, ys, labels=criterion_levels(criterion),
                                     weights="linear" if criterion.scale == "three_point" else None)
        assert row["value"] == pytest.approx(expected, abs=1e-9)
        assert xs != ys and -1 < expected < 1  # the disagreement shows
        defined += 1
    assert defined == len(rubrics["intent_routing"].criteria)
    print(f"round trip (without the server's start): {time.monotonic() - started:.1f} s")


def test_missing_settings_and_server_errors_are_one_line(label_studio, tmp_path, capsys, monkeypatch):
    home = str(tmp_path / "home")
    monkeypatch.delenv("LABEL_STUDIO_URL", raising=False)
    monkeypatch.delenv("LABEL_STUDIO_API_KEY", raising=False)
    code, out, err = cli(capsys, "labels", "pull", "--home", home)
    assert code == 2 and err.count("\n") == 1 and "LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY are not set" in err

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    wrong_key = "not-the-key-" + label_studio.owner.token[:8]
    cases = {
        "401": (label_studio.url, wrong_key),
        "404": (f"{label_studio.url}/no-such-prefix", label_studio.owner.token),
        "cannot reach the server": (closed, label_studio.owner.token),
    }
    for expected, (url, key) in cases.items():
        monkeypatch.setenv("LABEL_STUDIO_URL", url)
        monkeypatch.setenv("LABEL_STUDIO_API_KEY", key)
        for command in ("pull", "push"):
            if command == "push":  # push reads the outbox first: give it one task file
                folder = tmp_path / "home" / "labels" / "outbox" / "v1" / "label_studio"
                folder.mkdir(parents=True, exist_ok=True)
                (folder / "r.tasks.json").write_text(json.dumps([{"data": {"example_id": "ex_1"}}]))
                (folder / "r.config.xml").write_text("<View/>\n")
            code, out, err = cli(capsys, "labels", command, "--home", home)
            assert code == 1 and out == "", (command, err)
            assert err.startswith(f"error: Label Studio at {url}: ") and err.count("\n") == 1, err
            assert expected in err and "Traceback" not in err and key not in err, err
