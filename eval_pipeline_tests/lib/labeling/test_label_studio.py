"""The parts of the Label Studio client that need no server: settings, the outbox, the inbox files.
(The round trip against a real server is ``test_label_studio_live.py``.)"""

from __future__ import annotations

import json

import pytest

from eval_pipeline.cli import main
from eval_pipeline.lib.labeling.label_studio import (Connection, LabelStudioError, TaskFileError, _write_if_changed,
                                            export_file_name, outbox_tasks)


@pytest.mark.parametrize("env, missing", [
    ({}, "LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY are not set"),
    ({"LABEL_STUDIO_URL": "http://localhost:8080"}, "LABEL_STUDIO_API_KEY is not set"),
    ({"LABEL_STUDIO_API_KEY": "k" * 40, "LABEL_STUDIO_URL": "  "}, "LABEL_STUDIO_URL is not set"),
    ({"LABEL_STUDIO_API_KEY": "k" * 40, "LABEL_STUDIO_URL": "localhost:8080"}, "is not an http(s) URL"),
])
def test_connection_settings_say_what_is_missing(env, missing):
    with pytest.raises(LabelStudioError, match=missing.replace("(", r"\(").replace(")", r"\)")):
        Connection.from_env(env)


def test_connection_hides_the_key():
    conn = Connection.from_env({"LABEL_STUDIO_URL": "http://127.0.0.1:8080/", "LABEL_STUDIO_API_KEY": "s3cret-key"})
    assert conn.url == "http://127.0.0.1:8080" and "s3cret-key" not in repr(conn)
    assert conn.mask("Authorization: Token s3cret-key") == "Authorization: Token ***"


def write_version(outbox, version, rubric, tasks, config="<View/>\n"):
    folder = outbox / version / "label_studio"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{rubric}.tasks.json").write_text(tasks if isinstance(tasks, str) else json.dumps(tasks))
    if config is not None:
        (folder / f"{rubric}.config.xml").write_text(config)
    return folder


def test_outbox_tasks_takes_the_highest_version_or_the_one_asked(tmp_path):
    outbox = tmp_path / "outbox"
    write_version(outbox, "v2", "rag_qa", [{"data": {"example_id": "a"}}])
    write_version(outbox, "v10", "rag_qa", [{"data": {"example_id": "b"}}, {"data": {"example_id": "c"}}])
    (outbox / "notes").mkdir()  # not a version
    name, items = outbox_tasks(outbox)
    assert name == "v10" and [(i.rubric, len(i.tasks)) for i in items] == [("rag_qa", 2)]
    name, items = outbox_tasks(outbox, "v2")
    assert name == "v2" and items[0].tasks == [{"data": {"example_id": "a"}}] and items[0].config == "<View/>\n"
    with pytest.raises(TaskFileError, match=r"no annotation tasks of version 'v3' .*versions: v2, v10"):
        outbox_tasks(outbox, "v3")
    with pytest.raises(TaskFileError, match="no annotation tasks in"):
        outbox_tasks(tmp_path / "nothing")


@pytest.mark.parametrize("tasks, config, message", [
    ("[{\"data\": ", "<View/>", r"rag_qa.tasks.json: not a JSON task list"),
    ({"data": {}}, "<View/>", r"rag_qa.tasks.json: expected a JSON list of tasks, got dict"),
    ([{"data": {"example_id": "a"}}, {"data": {"example_id": 7}}], "<View/>",
     r"rag_qa.tasks.json: task index 1: field 'data.example_id': missing or not text"),
    ([{"data": {"example_id": "a"}}], None, r"rag_qa.config.xml: missing"),
])
def test_a_task_file_that_cannot_be_pushed_is_named(tmp_path, tasks, config, message):
    write_version(tmp_path, "v1", "rag_qa", tasks, config)
    with pytest.raises(TaskFileError, match=message):
        outbox_tasks(tmp_path)


def test_push_of_a_bad_outbox_is_one_line_before_any_request(tmp_path, capsys, monkeypatch):
    home = tmp_path / "home"
    write_version(home / "labels" / "outbox", "v1", "rag_qa", [{"data": {}}])
    # nothing listens here: the outbox is refused before the server is asked
    monkeypatch.setenv("LABEL_STUDIO_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "key-0123456789")
    assert main(["labels", "push", "--home", str(home)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "task index 0: field 'data.example_id'" in err


@pytest.mark.parametrize("title, name", [
    ("eval-pipeline rag_qa", "label_studio_rag_qa.json"),
    ("eval-pipeline my rubric/v2", "label_studio_my_rubric_v2.json"),
    ("eval-pipeline ../..", "label_studio_project.json"),
])
def test_export_file_names_stay_in_the_inbox(title, name):
    assert export_file_name(title) == name


def test_an_export_replaces_the_file_and_an_unchanged_one_leaves_it(tmp_path):
    path = tmp_path / "inbox" / "label_studio_rag_qa.json"
    assert _write_if_changed(path, b"[1]\n") and path.read_bytes() == b"[1]\n"
    before = path.stat().st_mtime_ns
    assert not _write_if_changed(path, b"[1]\n") and path.stat().st_mtime_ns == before
    assert _write_if_changed(path, b"[1, 2]\n") and path.read_bytes() == b"[1, 2]\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["label_studio_rag_qa.json"]  # no temporary left
