"""Tests for eval_pipeline.lib.core.settings and the one drift threshold of the lib configs."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Literal, Mapping, Optional

import numpy as np
import pytest

from eval_pipeline.lib.clustering.clusters import DRIFT_THRESHOLD, ClusterConfig, match_clusters
from eval_pipeline.lib.clustering.identity import IdentityRules
from eval_pipeline.lib.core.settings import build, choices, declared, setting
from eval_pipeline.lib.embeddings.encode import EmbeddingConfig
from eval_pipeline.lib.sampling.draw import DEFAULT_SIGNAL_WEIGHTS, SamplingConfig, plan_refresh


@dataclass(frozen=True)
class _Example:
    colour: Literal["red", "blue"] = setting("red", doc="the colour")
    keys: tuple[str, ...] = setting(("a",), doc="the keys")
    weights: Mapping[str, float] = setting(default_factory=lambda: {"x": 1.0}, doc="the weights")
    size: int | None = setting(None, doc="the size")
    hidden: int = 3


def test_declared_takes_type_default_and_doc_from_the_dataclass():
    colour = declared(_Example, "colour")
    assert (colour.annotation, colour.default, colour.doc) == (Literal["red", "blue"], "red", "the colour")
    keys = declared(_Example, "keys")
    assert keys.annotation == list[str] and keys.default == ["a"]  # a tuple field is a list setting
    weights = declared(_Example, "weights")
    assert weights.annotation == dict[str, float] and weights.default == {"x": 1.0}
    assert declared(_Example, "size").annotation == Optional[int]


@pytest.mark.parametrize("name", ["hidden", "missing"])
def test_a_field_not_declared_as_setting_is_refused_by_name(name):
    with pytest.raises(TypeError, match=f"_Example.{name} is not a setting"):
        declared(_Example, name)


def test_build_turns_setting_values_back_into_the_frozen_config():
    built = build(_Example, {"colour": "blue", "keys": ["b", "c"]}, size=4)
    assert built == _Example(colour="blue", keys=("b", "c"), size=4)
    assert isinstance(built.keys, tuple)


def test_choices_and_the_lib_checks_name_the_allowed_values():
    assert choices(Literal["a", "b"]) == ("a", "b")
    with pytest.raises(ValueError, match="method must be one of hdbscan, kmeans, not 'hdbscn'"):
        ClusterConfig(method="hdbscn")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="precision must be one of auto, float32, bfloat16, int8"):
        EmbeddingConfig(precision="fp16")  # type: ignore[arg-type]


def test_one_drift_threshold_default_everywhere():
    """The identity match, the drift table's match and sampling's merge of gone clusters all
    default to the one constant."""
    assert IdentityRules().match_cosine == SamplingConfig().merge_cosine == DRIFT_THRESHOLD
    assert inspect.signature(match_clusters).parameters["threshold"].default == DRIFT_THRESHOLD
    assert declared(SamplingConfig, "signal_weights").default == DEFAULT_SIGNAL_WEIGHTS


def _gone_cluster_refresh(merge_cosine: float):
    """A refresh where cluster c1 is gone and its nearest current cluster c2 is at cosine 0.85."""
    rng = np.random.default_rng(0)
    rows = [{"request_id": f"r{i}", "cluster_id": ("c2", "c3")[i % 2], "failure_signals": []} for i in range(60)]
    vectors = rng.normal(size=(60, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    previous = [{"example_id": f"e{i}", "cluster_id": "c1", "stratum": "c1", "request_id": f"old{i}",
                 "failure_signals": []} for i in range(5)]
    previous += [{"example_id": f"k{i}", "cluster_id": ("c2", "c3")[i % 2], "stratum": ("c2", "c3")[i % 2],
                  "request_id": f"r{i}", "failure_signals": []} for i in range(10)]
    drift = [{"cluster_id": c, "status": "continuing", "trend": "stable", "previous_share": 0.4,
              "current_share": 0.5, "note": "", "mode": "assigned"} for c in ("c2", "c3")]
    drift.append({"cluster_id": "c1", "status": "gone", "trend": "gone", "previous_share": 0.2, "current_share": 0.0,
                  "note": "", "nearest_id": "c2", "nearest_similarity": 0.85, "mode": "assigned"})
    config = SamplingConfig(target_size=15, merge_cosine=merge_cosine)
    return plan_refresh(previous, rows, vectors, drift, config, taken_request_ids={p["request_id"] for p in previous})


def test_the_drift_threshold_decides_which_gone_clusters_examples_move():
    """At the default 0.9 a gone cluster 0.85 from a continuing one is truly gone (its examples are
    pruned); at a drift threshold of 0.8 the same cluster was re-cut and its examples move."""
    strict = _gone_cluster_refresh(DRIFT_THRESHOLD)
    assert not strict.reassign
    assert {e for e, why in strict.remove if "cluster c1 is gone" in why} == {f"e{i}" for i in range(5)}
    loose = _gone_cluster_refresh(0.8)
    assert set(loose.reassign) == {f"e{i}" for i in range(5)}
    assert all(target == "c2" and "re-cut: cluster c1 -> c2" in why for target, _, why in loose.reassign.values())
    assert not {e for e, _ in loose.remove} & set(loose.reassign)
