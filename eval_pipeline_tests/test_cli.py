"""The command line: validate-logs exit codes and messages, schema output."""

import json
import re
import shutil
from pathlib import Path

import pytest
from conftest import FIXTURES, write_mixed_file

from eval_pipeline.cli import main


def test_validate_logs_all_valid_exits_0(capsys):
    assert main(["validate-logs", str(FIXTURES / "landing")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("3 files, 6 records: 6 valid, 0 invalid (1 non-LLM spans skipped)")


def test_validate_logs_reports_reasons_and_file_lines_exits_1(tmp_path, capsys):
    path = tmp_path / "mixed.canonical.jsonl"
    write_mixed_file(path)
    assert main(["validate-logs", str(path), "--max-errors", "3"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "1 files, 15 records: 3 valid, 12 invalid"
    counts = {line.split()[0]: int(line.split()[1]) for line in out[1:] if line.startswith("  ")}
    assert counts == {"duplicate_id": 1, "future_timestamp": 1, "invalid_json": 1, "invalid_timestamp": 1,
                      "invalid_value": 2, "line_too_long": 1, "missing_field": 1, "not_an_object": 1,
                      "not_utf8": 1, "unknown_field": 1, "wrong_type": 1}
    errors = [line for line in out if line.startswith(str(path))]
    assert errors[0] == f"{path}:3: invalid_json: column 76: Expecting value"
    assert errors[1].startswith(f"{path}:4: missing_field: completion: Field required")
    assert out[-1] == "... and 9 more"


def test_validate_logs_declared_format_and_missing_file(tmp_path, capsys):
    copy = tmp_path / "spans.jsonl"  # no format in the name: declared on the command line
    shutil.copy(FIXTURES / "landing" / "spans.otlp.jsonl", copy)
    assert main(["validate-logs", "--format", "openai", str(copy)]) == 1
    assert "missing_field" in capsys.readouterr().out
    assert main(["validate-logs", str(tmp_path / "nope.jsonl")]) == 2


@pytest.mark.parametrize(("fixture", "summary"), [
    ("rag_and_chat.openinference.jsonl", "1 files, 5 records: 5 valid, 0 invalid (6 non-LLM spans skipped)"),
    ("billing.langfuse.jsonl", "1 files, 4 records: 4 valid, 0 invalid (3 non-LLM spans skipped)"),
])
def test_validate_logs_trace_formats_by_name_and_by_content(tmp_path, capsys, fixture, summary):
    named = FIXTURES / "traces" / fixture
    assert main(["validate-logs", str(named)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == summary
    unnamed = tmp_path / "export.jsonl"  # no format in the name: detected from the first line
    shutil.copy(named, unnamed)
    assert main(["validate-logs", str(unnamed)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == summary
    # declared as another format, the same lines are quarantined, not misread
    assert main(["validate-logs", "--format", "openai", str(unnamed)]) == 1
    assert "missing_field" in capsys.readouterr().out


def test_validate_logs_trace_format_errors_name_file_line_and_field(tmp_path, capsys):
    path = tmp_path / "broken.langfuse.jsonl"
    observation = {"id": "o1", "traceId": "t1", "type": "GENERATION", "startTime": "2026-03-02T10:00:00Z",
                   "model": "m", "input": "hi", "output": "hello"}
    path.write_text(json.dumps({"id": "t1", "observations": [observation, "o2"]}) + "\n")
    assert main(["validate-logs", str(path)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "1 files, 2 records: 1 valid, 1 invalid"
    assert any(line.startswith(f"{path}:1 span 1: wrong_type: observations[1]: expected an observation object")
               for line in out)


def test_schema_command_prints_the_published_schema(capsys):
    assert main(["schema"]) == 0
    printed = json.loads(capsys.readouterr().out)
    published = json.loads((Path(__file__).resolve().parents[1] / "eval_pipeline" / "schemas" / "log_record.schema.json").read_text())
    assert printed == published


def test_power_command_explains_paired_versus_independent(capsys):
    assert main(["power", "--baseline-rate", "0.8", "--effect", "0.05"]) == 0
    out = capsys.readouterr().out
    assert "paired design:      312 examples" in out and "independent design: 1,094 examples per version" in out
    assert "only in a paired design" in out
    assert main(["power", "--baseline-rate", "0.8", "--effect", "0.05", "--slice-share", "0.1"]) == 0
    assert "-> 3,120 in the whole eval set" in capsys.readouterr().out  # a slice that is 10% of the set needs 10x


def test_power_command_rejects_bad_input(capsys):
    assert main(["power", "--baseline-rate", "1.3", "--effect", "0.05"]) == 2
    assert "error:" in capsys.readouterr().err


def test_refresh_refuses_a_month_without_partitions(tmp_path, capsys):
    assert main(["refresh", "--home", str(tmp_path), "--month", "2019-05"]) == 2
    assert "no daily partition exists" in capsys.readouterr().err
    assert main(["refresh", "--home", str(tmp_path), "--month", "May"]) == 2
    assert "expected YYYY-MM" in capsys.readouterr().err


def test_redact_command_on_files_and_a_bad_line(tmp_path, capsys):
    source = tmp_path / "in.jsonl"
    record = {"request_id": "r1", "timestamp": "2026-03-02T10:00:00Z", "completion": "Noted, Anna Berg.", "model": "m",
              "messages": [{"role": "user", "content": "I'm Anna Berg, card 4111 1111 1111 1111, mail anna.berg@example.com"}]}
    source.write_text(json.dumps({"text": "Please email me at ops@example.com"}) + "\n" + json.dumps(record) + "\n")
    out = tmp_path / "out.jsonl"
    assert main(["redact", "--in", str(source), "--out", str(out)]) == 0
    text_line, record_line = [json.loads(line) for line in out.read_text().splitlines()]
    assert text_line["text"] == "Please email me at <EMAIL_ADDRESS_1>"
    content = record_line["messages"][0]["content"]
    assert "Anna Berg" not in content and "4111" not in content and "anna.berg@example.com" not in content
    assert record_line["completion"] == "Noted, <PERSON_1>." and "<PERSON_1>" in content
    summary = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert summary["records"] == 1 and summary["text_lines"] == 1

    source.write_text(json.dumps({"text": "fine"}) + "\n" + '{"text": 5}\n')
    assert main(["redact", "--in", str(source), "--out", str(out)]) == 1
    assert "line 2" in capsys.readouterr().err


def test_redact_command_uses_the_pipelines_redaction_settings(tmp_path, capsys):
    """``redact`` takes the ``redaction`` resource the pipeline's definitions are built with, from
    the data home's ``settings.yaml``: a deployment's own pattern (member numbers) applies, as in
    ``redacted_logs``; ``--score-threshold`` still replaces the threshold, and an impossible one is
    an error, not a traceback."""
    from eval_pipeline.definitions import build_definitions
    from eval_pipeline.lib.core.paths import DataHome

    home = tmp_path / "home"
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text(json.dumps({"text": "Member MBR-482913 asked about card 4111 1111 1111 1111"}) + "\n")

    def redacted() -> str:
        assert main(["redact", "--home", str(home), "--in", str(source), "--out", str(out)]) == 0
        return json.loads(out.read_text())["text"]

    assert redacted() == "Member MBR-482913 asked about card <CREDIT_CARD_1>"  # the default settings
    assert not home.exists()  # the data home is named, not created
    home.mkdir()
    (home / "settings.yaml").write_text("redaction:\n  custom_patterns:\n    MEMBER_ID: '\\bMBR-\\d{6}\\b'\n")
    assert redacted() == "Member <MEMBER_ID_1> asked about card <CREDIT_CARD_1>"
    summary = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert summary["pii_counts"] == {"CREDIT_CARD": 1, "MEMBER_ID": 1}
    # the pipeline's own redaction resource is the same one
    pipeline = build_definitions(DataHome.resolve(home)).resources["redaction"]
    assert [p.entity_type for p in pipeline.config().custom_patterns][-1] == "MEMBER_ID"
    assert sorted(p.name for p in home.iterdir()) == ["settings.yaml"]

    assert main(["redact", "--home", str(home), "--in", str(source), "--out", str(out),
                 "--score-threshold", "1.5"]) == 2
    err = capsys.readouterr().err
    assert "--score-threshold" in err and "score_threshold must be in [0, 1]" in err and "Traceback" not in err


@pytest.mark.parametrize("text, says", [
    ("clustering:\n  method: hdbscn\n", "clustering.method: Input should be 'hdbscan' or 'kmeans'"),
    ("clustering:\n  metod: kmeans\n", "clustering.metod: unknown field"),
    ("embedding:\n  precision: fp8\n", "embedding.precision: Input should be"),
    ("evaluation:\n  sensor_tier: nightly\n", "evaluation.sensor_tier: Input should be"),
    ("evaluation:\n  continuous_size: 5000\n", "evaluation.continuous_size: Input should be less than or equal to 200"),
    ("judge:\n  api_key: sk-123\n", "judge.api_key: not settable here (a secret never goes into a file"),
    ("settings:\n  home: /elsewhere\n", "settings.home: not settable here"),
    ("clustrng:\n  method: kmeans\n", "clustrng: not a settings group"),
    ("- clustering\n", "expected a mapping of settings groups"),
    ("clustering: [kmeans]\n", "clustering: expected a mapping of fields"),
    ("clustering:\n  method: [unclosed\n", "invalid YAML"),
])
def test_a_bad_settings_file_is_refused_at_load_naming_the_field(tmp_path, capsys, text, says):
    """Every command refuses the data home's ``settings.yaml`` before anything runs, with the file and
    ``group.field`` named; building the definitions (what ``dagster dev`` loads) refuses it too."""
    from eval_pipeline.definitions import build_definitions
    from eval_pipeline.defs.resources import SettingsError
    from eval_pipeline.lib.core.paths import DataHome

    home = tmp_path / "home"
    home.mkdir()
    (home / "settings.yaml").write_text(text)
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text(json.dumps({"text": "hello"}) + "\n")
    for argv in (["redact", "--home", str(home), "--in", str(source), "--out", str(out)],
                 ["refresh", "--home", str(home), "--month", "2026-01"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {home / 'settings.yaml'}: ") and says in err and "Traceback" not in err
    with pytest.raises(SettingsError, match=re.escape(says)):
        build_definitions(DataHome.resolve(home))
    assert not out.exists()


def test_settings_file_values_reach_the_resources_and_overrides_add_to_them(tmp_path):
    from eval_pipeline.definitions import build_definitions
    from eval_pipeline.defs.resources import SamplingSettings
    from eval_pipeline.lib.core.paths import DataHome

    home = DataHome.resolve(tmp_path / "home")
    home.root.mkdir()
    home.settings_file.write_text("clustering:\n  method: kmeans\n  drift_threshold: 0.85\n"
                                  "sampling:\n  floor: 7\nsettings:\n  raw_retention_days: 30\n")
    resources = build_definitions(home).resources
    assert resources["clustering"].method == "kmeans" and resources["clustering"].rules().match_cosine == 0.85
    assert resources["settings"].raw_retention_days == 30 and resources["settings"].home == str(home.root)
    # a command's override (refresh --target-size) sets its field on top of the file's
    merged = build_definitions(home, {"sampling": SamplingSettings(target_size=120)}).resources["sampling"]
    assert (merged.target_size, merged.floor) == (120, 7)


def test_evaluate_rescores_the_baseline_by_default_and_the_flag_says_what_it_trades(capsys):
    from eval_pipeline.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["evaluate", "--model", "m:2"]).rescore_baseline is True
    assert parser.parse_args(["evaluate", "--model", "m:2", "--no-rescore-baseline"]).rescore_baseline is False
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--no-rescore-baseline" in help_text and "only the examples both versions hold are paired" in help_text


def test_validate_logs_reports_hostile_lines_instead_of_crashing(tmp_path, capsys):
    import gzip

    from conftest import good_record

    ok = [json.dumps(good_record(f"ok-{i}", "2026-03-02T10:00:00Z")).encode() for i in range(3)]
    deep = ok[1][:-1] + b', "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    lone = json.dumps(good_record("lone", "2026-03-02T11:00:00Z", completion="a\ud800b")).encode()
    (tmp_path / "h.canonical.jsonl").write_bytes(b"\xef\xbb\xbf" + b"\n".join([ok[0], deep, lone, ok[2]]) + b"\n")
    packed = gzip.compress(b"\n".join(json.dumps(good_record(f"z-{i}", "2026-03-02T10:00:00Z")).encode()
                                      for i in range(200)))
    (tmp_path / "cut.canonical.jsonl.gz").write_bytes(packed[: len(packed) // 2])
    assert main(["validate-logs", str(tmp_path)]) == 1
    out = capsys.readouterr().out.splitlines()
    counts = {line.split()[0]: int(line.split()[1]) for line in out[1:] if line.startswith("  ")}
    assert counts == {"corrupt_file": 1, "invalid_text": 1, "too_deeply_nested": 1}
    assert f"{tmp_path / 'h.canonical.jsonl'}:3: invalid_text: completion: unpaired surrogate \\ud800" in "\n".join(out)
    assert any(line.startswith(f"{tmp_path / 'h.canonical.jsonl'}:2: too_deeply_nested: ") for line in out)
    assert any(line.startswith(f"{tmp_path / 'cut.canonical.jsonl.gz'}:") and ": corrupt_file: gzip stream" in line
               for line in out)


# bad data reaches the user as one `error:` line naming the file, never a traceback

_BAD_REGISTRY = {
    "not UTF-8": b'{"name": "m", "version": "\xff"}\n',
    "nested too deeply": b"[" * 100_000 + b"]" * 100_000 + b"\n",
    "an integer too long": b'{"name": ' + b"9" * 5000 + b"}\n",
    "a lone surrogate": b'{"name": "\\ud800"}\n',
}


@pytest.mark.parametrize("content", list(_BAD_REGISTRY.values()), ids=list(_BAD_REGISTRY))
def test_register_model_and_evaluate_on_a_corrupt_registry_say_error_with_the_line(tmp_path, capsys, content):
    registry = tmp_path / "registry" / "models.jsonl"
    registry.parent.mkdir()
    registry.write_bytes(content)
    recording = tmp_path / "out.jsonl"
    recording.write_text('{"example_id": "e1", "output": "hi"}\n', encoding="utf-8")
    args = ["register-model", "--home", str(tmp_path), "--name", "m", "--version", "1", "--provider", "recorded",
            "--recorded", str(recording)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and f"{registry} line 1" in err and "Traceback" not in err
    assert main(["evaluate", "--home", str(tmp_path), "--model", "m:1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and f"{registry} line 1" in err
    assert registry.read_bytes() == content  # nothing appended to a file that cannot be read


def test_register_model_refuses_a_param_json_cannot_read(tmp_path, capsys):
    recording = tmp_path / "out.jsonl"
    recording.write_text('{"example_id": "e1", "output": "hi"}\n', encoding="utf-8")
    base = ["register-model", "--home", str(tmp_path), "--name", "m", "--version", "1", "--provider", "recorded",
            "--recorded", str(recording)]
    for value in ("9" * 5000, "\u0663"):
        assert main([*base, "--param", f"max_tokens={value}"]) == 2
        assert capsys.readouterr().err.startswith("error: --param 'max_tokens=")
    assert not (tmp_path / "registry" / "models.jsonl").exists()


def test_register_model_on_a_registry_path_that_is_a_folder(tmp_path, capsys):
    (tmp_path / "registry" / "models.jsonl").mkdir(parents=True)
    recording = tmp_path / "out.jsonl"
    recording.write_text('{"example_id": "e1", "output": "hi"}\n', encoding="utf-8")
    assert main(["register-model", "--home", str(tmp_path), "--name", "m", "--version", "1",
                 "--provider", "recorded", "--recorded", str(recording)]) == 1
    assert capsys.readouterr().err.startswith(f"error: {tmp_path / 'registry' / 'models.jsonl'}: ")


@pytest.mark.parametrize("content", [
    b"a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
    b"c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
    b"e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n",
    b"min_pass_rate: \xff\n",
    b"- a list\n",
    b"[" * 5000,
], ids=["alias bomb", "not UTF-8", "a list", "nested too deeply"])
def test_evaluate_with_a_bad_thresholds_file_says_error_with_the_file(tmp_path, capsys, content):
    recording = tmp_path / "out.jsonl"
    recording.write_text('{"example_id": "e1", "output": "hi"}\n', encoding="utf-8")
    assert main(["register-model", "--home", str(tmp_path), "--name", "m", "--version", "1",
                 "--provider", "recorded", "--recorded", str(recording)]) == 0
    capsys.readouterr()
    gates = tmp_path / "gates.yaml"
    gates.write_bytes(content)
    assert main(["evaluate", "--home", str(tmp_path), "--model", "m:1", "--thresholds", str(gates)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {gates}: ") and "Traceback" not in err


def test_register_model_refuses_a_recording_that_cannot_be_replayed(tmp_path, capsys):
    recording = tmp_path / "out.jsonl"
    recording.write_bytes(b'{"example_id": "e1", "output": "hi"}\n{"example_id": "e2", "output": "\xff"}\n')
    assert main(["register-model", "--home", str(tmp_path), "--name", "m", "--version", "1",
                 "--provider", "recorded", "--recorded", str(recording)]) == 2
    assert capsys.readouterr().err == f"error: cannot register m:1: {recording} line 2: not UTF-8 text (byte 0xff)\n"
    assert not (tmp_path / "registry" / "models.jsonl").exists()
