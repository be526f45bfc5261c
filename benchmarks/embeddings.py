"""Embedding speed and clustering quality and cost: prints figures (not a test).

    .venv/bin/python benchmarks/embeddings.py [--sizes 10000,100000] [--seeds 0,1,2,3]

1. Speed, for each size: the user texts of that many demo-log records (``generate_logs``, then
   ``embedding_text`` of each record, as ``log_embeddings`` embeds them) encoded by
   * a bare float32 ``SentenceTransformer.encode`` (the baseline, batch 64),
   * the embedder ``log_embeddings`` uses (``precision="auto"``: bfloat16 where the CPU has it),
   * the static fast mode (a token table distilled from the same model),
   all in this one process; texts/s and the ratio to float32 are the figures. Then clustering
   seconds of the auto embeddings with the default settings (UMAP + HDBSCAN; above 20,000 records
   fitted on a sample and the rest assigned) and the peak RSS of the process so far.
2. Quality: the long-tailed Banking77 month (30 intents, 150 down to 10 queries each) embedded
   with float32, auto and static, clustered with the default HDBSCAN settings under several
   seeds (UMAP's and the sample's); NMI and ARI against the true intents, mean over the seeds.
3. The content-hash cache: the 10k texts through ``embed_with_cache`` twice into a DuckDB file:
   the second pass embeds nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _demo_texts(n: int, workdir: Path) -> list[str]:
    """embedding_text of n demo-log records (real Banking77, MT-Bench and Arena-Hard text, all
    three log formats), parsed by ``ingest_day`` as ``raw_logs`` parses them. PII is not redacted
    here: the texts are as long as the redacted ones, which is what the speed depends on."""
    from datetime import datetime, timedelta, timezone

    from eval_pipeline.demo.logs import generate_logs
    from eval_pipeline.lib.embeddings.encode import embedding_text
    from eval_pipeline.lib.ingest.ingestion import ingest_day

    days = max(1, n // 2000)
    out = workdir / f"logs_{n}"
    start = date(2026, 1, 1)
    generate_logs(out, start, days, -(-n // days) + 20, seed=11, truth_dir=workdir / f"truth_{n}")
    now = datetime.now(timezone.utc) + timedelta(days=3650)
    texts: list[str] = []
    for i in range(days):
        texts += [embedding_text(row) for row in ingest_day(out, start + timedelta(days=i), now=now).rows]
    return texts[:n]


def _time(fn, texts):
    started = time.perf_counter()
    out = fn(texts)
    return out, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--seeds", default="0,1,2,3")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]

    import duckdb
    import torch
    from sentence_transformers import SentenceTransformer
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    from eval_pipeline.demo.banking77 import load_queries, long_tail_mix
    from eval_pipeline.lib.clustering.clusters import NOISE, ClusterConfig, cluster_embeddings
    from eval_pipeline.lib.embeddings.encode import (EmbeddingConfig, cpu_bf16_support, embed_with_cache, get_embedder,
                                              model_location)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; bf16: {cpu_bf16_support()}")
    workdir = Path(tempfile.mkdtemp(prefix="embedding_bench_"))
    bare = SentenceTransformer(model_location(None), device="cpu")

    def bare_encode(texts):
        with torch.inference_mode():
            return bare.encode(texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False)

    auto = get_embedder(EmbeddingConfig())
    static = get_embedder(EmbeddingConfig(mode="static", cache_dir=str(workdir)))
    print(f"auto embedder: {auto.precision} ({auto.precision_reason}); load {auto.load_seconds:.1f} s")
    print(f"static embedder: dim {static.dim}, {static.precision_reason}")
    bare_encode(["warm up"]); auto.encode(["warm up"]); static.encode(["warm up"])

    print("\n== speed ==")
    print("records: demo-log records; distinct: their distinct texts (all are encoded, as a bare encode would)")
    print(f"{'records':>8} {'distinct':>8} {'float32/s':>10} {'auto/s':>8} {'ratio':>6} {'static/s':>9} "
          f"{'cosine':>7} {'cluster s':>9} {'clusters':>8} {'noise':>6} {'peak RSS MB':>11}")
    for n in sizes:
        texts = _demo_texts(n, workdir)
        ref, t_ref = _time(bare_encode, texts)
        fast, t_fast = _time(auto.encode, texts)
        _, t_static = _time(static.encode, texts)
        cosine = float(np.mean(np.sum(ref * fast, axis=1)))
        result, t_cluster = _time(lambda x: cluster_embeddings(x, ClusterConfig()), fast)
        print(f"{n:>8} {len(set(texts)):>8} {n / t_ref:>10.0f} {n / t_fast:>8.0f} {t_ref / t_fast:>6.2f} "
              f"{n / t_static:>9.0f} {cosine:>7.4f} {t_cluster:>9.1f} {result.n_clusters:>8} "
              f"{result.noise_share:>6.1%} {_peak_rss_mb():>11.0f}")
        print(f"         clustering: {result.criterion}; seconds {result.params()['seconds']}")

    print("\n== quality on the long-tailed Banking77 month (HDBSCAN defaults) ==")
    all_texts, categories = load_queries()
    idx, sizes_by_intent = long_tail_mix(categories)
    texts = [all_texts[i] for i in idx]
    truth = categories[idx]
    print(f"{len(texts)} queries, {len(sizes_by_intent)} intents, {min(sizes_by_intent.values())}-"
          f"{max(sizes_by_intent.values())} each; seeds {seeds}")
    vectors = {"float32": bare_encode(texts), f"auto ({auto.precision})": auto.encode(texts), "static": static.encode(texts)}
    baseline = None
    for name, x in vectors.items():
        nmis, aris, noise = [], [], []
        for seed in seeds:
            labels = cluster_embeddings(x, ClusterConfig(seed=seed, map_method="none")).labels
            nmis.append(normalized_mutual_info_score(truth, labels))
            aris.append(adjusted_rand_score(truth, labels))
            noise.append(float(np.mean(labels == NOISE)))
        mean = statistics.mean(nmis)
        baseline = mean if baseline is None else baseline
        print(f"  {name:<18} NMI {mean:.3f} (per seed {', '.join(f'{v:.3f}' for v in nmis)}; "
              f"{mean - baseline:+.3f} vs float32)  ARI {statistics.mean(aris):.3f}  noise {statistics.mean(noise):.1%}")

    print("\n== content-hash cache (10k texts, DuckDB) ==")
    texts = _demo_texts(min(10_000, sizes[0]), workdir)
    with duckdb.connect(str(workdir / "cache.duckdb")) as con:
        first = embed_with_cache(texts, auto, lambda: contextlib.nullcontext(con))
        second = embed_with_cache(texts, auto, lambda: contextlib.nullcontext(con))
    print(f"  first pass: {first.unique} distinct of {len(texts)}, embedded {first.embedded} in {first.seconds:.1f} s")
    print(f"  second pass: embedded {second.embedded}, cache hits {second.cached}")
    print(f"\npeak RSS {_peak_rss_mb():.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
