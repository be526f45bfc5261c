"""Banking77 queries (Casanueva et al. 2020, CC-BY-4.0) as packaged in ``data/banking77``,
and the long-tailed month the clustering tests and the embedding benchmark measure on."""

from __future__ import annotations

import collections
import csv
from pathlib import Path

import numpy as np

__all__ = ["TRAIN_CSV", "load_queries", "long_tail_mix", "two_months", "drift_months", "embedded_queries"]

TRAIN_CSV = Path(__file__).resolve().parent / "data" / "banking77" / "train.csv"


def load_queries(path: Path = TRAIN_CSV) -> tuple[list[str], np.ndarray]:
    """(texts, intents) of every query of the file, in file order."""
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [r["text"] for r in rows], np.array([r["category"] for r in rows])


def long_tail_mix(categories: np.ndarray, seed: int = 0, n_intents: int = 30, largest: int = 150,
                  smallest: int = 10) -> tuple[np.ndarray, dict[str, int]]:
    """Row indices of a long-tailed month: ``n_intents`` intents (drawn with ``seed`` among those
    with >= 100 queries), geometric sizes from ``largest`` down to ``smallest``; the larger sizes
    go to the intents with more queries (capped at what an intent has). Returns the indices and
    intent -> size."""
    rng = np.random.default_rng(seed)
    counts = collections.Counter(categories.tolist())
    pool = sorted(c for c, n in counts.items() if n >= 100)
    chosen = sorted(rng.choice(pool, n_intents, replace=False).tolist(), key=lambda c: (-counts[c], c))
    sizes = np.round(largest * (smallest / largest) ** (np.arange(n_intents) / (n_intents - 1))).astype(int)
    indices, actual = [], {}
    for intent, size in zip(chosen, sizes):
        rows = np.flatnonzero(categories == intent)
        size = int(min(size, len(rows)))
        indices.extend(rng.choice(rows, size, replace=False).tolist())
        actual[intent] = size
    return np.array(indices), actual


def two_months(categories: np.ndarray, seed: int = 0, n_intents: int = 24, largest: int = 80, smallest: int = 10,
               new_sizes: tuple[int, ...] = (40, 15)) -> tuple[np.ndarray, np.ndarray, list[str], str]:
    """Row indices of two consecutive months of the same traffic, as the refresh sees it.

    Month 1: ``n_intents`` intents (drawn with ``seed`` among those with >= 100 queries),
    geometric sizes from ``largest`` down to ``smallest``, the larger sizes to the intents with
    more queries and each at most half of what its intent has. Month 2: the same intents at the
    same sizes with fresh queries (disjoint from month 1's), except one dropped (drawn with
    ``seed``), plus ``len(new_sizes)`` intents that month 1 did not have. Returns (month 1 rows,
    month 2 rows, the new intents, the dropped intent).
    """
    rng = np.random.default_rng(seed)
    counts = collections.Counter(categories.tolist())
    pool = sorted(c for c, n in counts.items() if n >= 100)
    chosen = rng.choice(pool, n_intents + len(new_sizes), replace=False).tolist()
    old = sorted(chosen[:n_intents], key=lambda c: (-counts[c], c))
    new = chosen[n_intents:]
    dropped = old[int(rng.integers(n_intents))]
    sizes = np.round(largest * (smallest / largest) ** (np.arange(n_intents) / (n_intents - 1))).astype(int)
    sizes = [int(min(size, counts[c] // 2)) for c, size in zip(old, sizes)]
    shuffled = {c: rng.permutation(np.flatnonzero(categories == c)) for c in chosen}
    first = [shuffled[c][:size] for c, size in zip(old, sizes)]
    second = [shuffled[c][size:2 * size] for c, size in zip(old, sizes) if c != dropped]
    second += [shuffled[c][:size] for c, size in zip(new, new_sizes)]
    return np.concatenate(first), np.concatenate(second), new, dropped


def drift_months(categories: np.ndarray, seed: int = 7, per_intent: int = 40) -> tuple[np.ndarray, np.ndarray, list[str], str]:
    """Two months of equal-sized intents: month A holds 25 intents, month B 24 of them (one
    dropped) plus 3 new ones, each month with its own queries of an intent (disjoint draws).
    Returns (A rows, B rows, the new intents, the dropped intent)."""
    rng = np.random.default_rng(seed)
    counts = collections.Counter(categories.tolist())
    pool = sorted(c for c, n in counts.items() if n >= 2 * per_intent)
    intents = rng.choice(pool, 28, replace=False).tolist()
    old, new, dropped = intents[:25], intents[25:], intents[0]
    shuffled = {c: rng.permutation(np.flatnonzero(categories == c)) for c in intents}
    a = np.concatenate([shuffled[c][:per_intent] for c in old])
    b = np.concatenate([shuffled[c][per_intent:2 * per_intent] for c in old if c != dropped]
                       + [shuffled[c][per_intent:2 * per_intent] for c in new])
    return a, b, new, dropped


def embedded_queries(texts: list[str], cache: Path, name: str = "banking77") -> np.ndarray:
    """Embeddings of ``texts`` with the default embedder, cached in ``cache`` under a file named
    by the model, its precision and the texts (so a change of any of them embeds anew)."""
    import hashlib

    from eval_pipeline.lib.embeddings.encode import EmbeddingConfig, get_embedder

    embedder = get_embedder(EmbeddingConfig())
    key = hashlib.sha256("\n".join([embedder.model_id, embedder.precision, *texts]).encode()).hexdigest()[:16]
    path = cache / f"{name}_{key}.npy"
    if path.exists():
        return np.load(path)
    vectors = embedder.encode(texts)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors
