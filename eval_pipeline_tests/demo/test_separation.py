"""The demo stays out of the pipeline: no pipeline module imports ``eval_pipeline.demo`` (only the
demo's command path, lazily), and the demo's redaction words reach the pipeline only as its
``extra_allow_list`` setting."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from eval_pipeline.demo.redaction import ALLOW_LIST
from eval_pipeline.demo.settings import THRESHOLDS, demo_resources
from eval_pipeline.lib.privacy.redaction import DEFAULT_ALLOW_LIST, RedactionConfig, get_redactor

PACKAGE = Path(__file__).resolve().parents[2] / "eval_pipeline"
# the demo's command path: `eval-pipeline demo` / `generate-logs` and the runs they call
DEMO_COMMAND_PATH = {"cli.py": {"cmd_demo", "cmd_generate_logs"},
                     "runs.py": {"simulate_demo_annotations", "register_demo_models"}}


def _demo_imports(path: Path) -> list[tuple[str, int]]:
    """(enclosing function or "<module>", line) of every import of eval_pipeline.demo in ``path``."""
    tree = ast.parse(path.read_text("utf-8"))
    found = []

    def visit(node: ast.AST, where: str) -> None:
        for child in ast.iter_child_nodes(node):
            name = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else where
            modules = []
            if isinstance(child, ast.ImportFrom) and child.module:
                modules = [child.module] + [f"{child.module}.{a.name}" for a in child.names]
            elif isinstance(child, ast.Import):
                modules = [a.name for a in child.names]
            if any(m == "eval_pipeline.demo" or m.startswith("eval_pipeline.demo.") for m in modules):
                found.append((where, child.lineno))
            visit(child, name)

    visit(tree, "<module>")
    return found


def test_no_pipeline_module_imports_the_demo():
    checked = 0
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] == "demo":
            continue
        checked += 1
        allowed = DEMO_COMMAND_PATH.get(str(rel), set())
        stray = [(where, line) for where, line in _demo_imports(path) if where not in allowed]
        assert stray == [], f"{rel} imports eval_pipeline.demo outside the demo command path: {stray}"
    assert checked > 40
    # the demo command path does use it (the check above would pass vacuously if it did not)
    assert {where for where, _ in _demo_imports(PACKAGE / "cli.py")} == DEMO_COMMAND_PATH["cli.py"]


def test_the_demo_allow_list_reaches_the_pipeline_as_its_extra_allow_list():
    resources = demo_resources(target_size=150)
    redaction = resources["redaction"]
    assert redaction.extra_allow_list == list(ALLOW_LIST)
    assert redaction.config().allow_list == DEFAULT_ALLOW_LIST + ALLOW_LIST
    assert resources["sampling"].target_size == 150
    assert set(demo_resources()) == {"redaction", "evaluation"}  # no sampling size unless given
    assert resources["evaluation"].thresholds == str(THRESHOLDS) and THRESHOLDS.is_file()
    assert not {e.casefold() for e in ALLOW_LIST} & {e.casefold() for e in DEFAULT_ALLOW_LIST}


@pytest.mark.parametrize("text, default, demo", [
    # the demo bank's name is a name to the model: redacted by default, kept with the demo's list
    ("You are Kestrel, the assistant of Kestrel Bank. Be brief.",
     "You are <PERSON_1>, the assistant of <PERSON_1> Bank. Be brief.",
     "You are Kestrel, the assistant of Kestrel Bank. Be brief."),
    # a real name stays redacted either way
    ("Hi, this is Anna Schmidt from Kestrel support.", "Hi, this is <PERSON_1> from Kestrel support.",
     "Hi, this is <PERSON_1> from Kestrel support."),
])
def test_the_demo_allow_list_keeps_the_demo_bank_and_nothing_else(text, default, demo):
    assert get_redactor().redact_texts([text])[0].text == default
    assert get_redactor(RedactionConfig(allow_list=DEFAULT_ALLOW_LIST + ALLOW_LIST)).redact_texts([text])[0].text == demo
