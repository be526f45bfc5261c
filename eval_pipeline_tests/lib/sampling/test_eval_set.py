"""Tests for the version bookkeeping of eval_pipeline.lib.sampling.eval_set (the sampling is in test_sampling)."""

from datetime import date

from eval_pipeline.lib.sampling.eval_set import (VersionBuild, base_version, changelog_markdown, next_version, reusable_version,
                                        version_number, with_removed_in)

JAN, FEB, MAR = date(2026, 1, 1), date(2026, 2, 1), date(2026, 3, 1)


def test_version_names_are_ordered_by_number():
    assert [version_number(v) for v in ("v1", "v10", "x", None)] == [1, 10, 0, 0]
    assert next_version([]) == "v1" and next_version(["v2", "v10", "v9"]) == "v11"


def test_base_version_sees_versions_that_only_the_changelog_holds():
    versions = [{"eval_set_version": "v1", "month": JAN}, {"eval_set_version": "v3", "month": MAR}]
    changelog = [{"eval_set_version": "v2", "month": FEB}]  # every example of v2 was removed
    assert base_version(versions, changelog, MAR) == (["v1", "v2", "v3"], "v2")
    assert base_version(versions, changelog, JAN) == (["v1", "v2", "v3"], None)


def test_reusable_version_for_a_rerun_with_the_same_examples():
    versions = [{"eval_set_version": "v2", "month": FEB, "example_id": e} for e in ("a", "b")]
    same = VersionBuild("v3", [{"example_id": "b"}, {"example_id": "a"}], [])
    other = VersionBuild("v3", [{"example_id": "a"}], [])
    assert reusable_version(versions, FEB, same) == "v2"
    assert reusable_version(versions, FEB, other) is None
    assert reusable_version(versions, MAR, same) is None
    assert reusable_version(versions, MAR, VersionBuild("v2", [], [], unchanged=True)) == "v2"


def test_removed_in_and_changelog_summary():
    rows = [{"eval_set_version": "v1", "example_id": e, "removed_in": None} for e in ("a", "b", "c")]
    changelog = [
        {"eval_set_version": "v1", "month": JAN, "example_id": e, "action": "added", "reason": "initial draw"} for e in "abc"
    ] + [
        {"eval_set_version": "v2", "month": FEB, "example_id": "b", "action": "removed", "reason": "cluster c0002 is gone"},
        {"eval_set_version": "v3", "month": MAR, "example_id": "c", "action": "removed", "reason": "cluster c0003 is gone"},
        {"eval_set_version": "v3", "month": MAR, "example_id": "a", "action": "reassigned", "reason": "re-cut"},
    ]
    assert [r["removed_in"] for r in with_removed_in(rows, changelog)] == [None, "v2", "v3"]
    text = changelog_markdown(changelog, {"v1": 3, "v2": 2, "v3": 1})
    assert text.index("## v3 (2026-03), 1 examples") < text.index("## v1 (2026-01), 3 examples")
    assert "0 added, 1 removed, 1 moved to a re-cut cluster" in text and "- 3 x initial draw" in text


def test_an_example_without_task_type_is_sliced_by_its_cluster():
    import json

    import numpy as np

    from eval_pipeline.lib.sampling.draw import SamplingConfig
    from eval_pipeline.lib.sampling.eval_set import build_version, example_category

    assert example_category({"task_type": "rag_qa", "cluster_id": "c0001"}) == "rag_qa"
    assert example_category({"task_type": None, "cluster_id": "c0003"}) == "cluster:c0003"
    assert example_category({"task_type": "", "cluster_id": "unclustered"}) == "cluster:unclustered"
    assert example_category({}) == "unknown"
    # through a real draw: no null category, and the slice says the same
    records = [{"request_id": f"r{i}", "timestamp": None, "task_type": None if i % 3 else "billing",
                "cluster_id": f"c000{i % 2 + 1}", "messages": [{"role": "user", "content": f"q{i}"}]}
               for i in range(12)]
    vectors = np.eye(12, dtype=np.float32)
    build = build_version(records, vectors, date(2026, 3, 1), SamplingConfig(target_size=12, floor=1))
    assert build.rows and all(r["category"] for r in build.rows)
    assert {r["category"] for r in build.rows} <= {"billing", "cluster:c0001", "cluster:c0002"}
    assert all(json.loads(r["slice"])["category"] == r["category"] for r in build.rows)
    assert all((r["task_type"] is None) == r["category"].startswith("cluster:") for r in build.rows)
