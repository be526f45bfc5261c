"""Which redaction allow-list entries a corpus needs: prints figures (not a test).

    .venv/bin/python benchmarks/allow_list.py [--demo-rows 1200] [--seed 1]

Runs the redactor with an EMPTY allow-list over (a) the Banking77 *train* and *test* splits
(10,003 and 3,080 public support queries), (b) public prompts and answers: the MT-Bench questions and the Arena-Hard
prompts with the two models' answers (``demo/data/``, 1,230 texts, 0.5 MB), and (c) demo logs
(``generate_logs``, every user-data text of each row: the templated support turns of the demo's
bank around those public texts), and
counts, per entry of ``lib/privacy/redaction.py: DEFAULT_ALLOW_LIST`` and of the demo's own list
(``demo/redaction.py: ALLOW_LIST``), the findings it would drop (the whole finding equals the
entry, or it is a name whose every word is an entry). An entry that no public corpus needs has
no place in the production default; one only the demo logs need belongs to the demo.
"""

from __future__ import annotations

import argparse
import re
import shutil
import tempfile
from collections import Counter
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

START = date(2026, 1, 5)
BANKING77_TEST = Path(__file__).resolve().parents[1] / "eval_pipeline_tests" / "fixtures" / "public" / "banking77_test.csv"
_EDGE = " \t\n.,;:!?\"'()[]{}<>*`"


def _texts(row: dict) -> list[str]:
    parts = [m["content"] for m in row["messages"]] + [row["completion"] or "", row["feedback_comment"] or ""]
    return [p for p in parts + [c["text"] for c in row["retrieved_chunks"]] if p]


def entry_hits(redactor, texts: list[str], entries: tuple[str, ...]) -> Counter[str]:
    """Findings of ``redactor`` (run without an allow-list) that each entry would drop."""
    from eval_pipeline.lib.privacy.redaction import _AllowList

    single = {e: _AllowList([e]) for e in entries}
    hits: Counter[str] = Counter()
    for text, analysis in zip(texts, redactor.analyze(texts)):
        for span in analysis.spans:
            value = text[span.start:span.end].strip(_EDGE)
            words = [w.strip(_EDGE) for w in re.findall(r"\S+", value)]
            for entry, allow in single.items():
                if value in allow or (span.entity_type == "PERSON" and words and all(w in allow for w in words)):
                    hits[entry] += 1
    return hits


def _public_texts() -> list[str]:
    """MT-Bench questions, Arena-Hard prompts and both models' answers, as shipped in demo/data/."""
    from eval_pipeline.demo.logs import _data

    data = _data()
    texts = [turn for q in data.mt_bench for turn in q["turns"]]
    for q in data.arena:
        texts += [q["prompt"], *q["answers"].values()]
    return list(dict.fromkeys(t for t in texts if t))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--demo-rows", type=int, default=1200)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    from eval_pipeline.demo.banking77 import load_queries
    from eval_pipeline.demo.logs import generate_logs
    from eval_pipeline.demo.redaction import ALLOW_LIST as DEMO_ALLOW_LIST
    from eval_pipeline.lib.ingest.ingestion import ingest_day
    from eval_pipeline.lib.privacy.redaction import DEFAULT_ALLOW_LIST, RedactionConfig, Redactor

    redactor = Redactor(RedactionConfig(allow_list=()))
    entries = tuple(dict.fromkeys(DEFAULT_ALLOW_LIST + DEMO_ALLOW_LIST))
    banking, _ = load_queries()
    banking_hits = entry_hits(redactor, banking, entries)
    test_split, _ = load_queries(BANKING77_TEST)
    test_hits = entry_hits(redactor, test_split, entries)
    public = _public_texts()
    public_hits = entry_hits(redactor, public, entries)

    work = Path(tempfile.mkdtemp(prefix="allow-list-bench-"))
    try:
        days = 4
        generate_logs(work / "landing", START, days, max(1, args.demo_rows // days), seed=args.seed,
                      truth_dir=work / "truth")
        now = datetime.now(timezone.utc) + timedelta(days=3650)
        rows = [r for i in range(days) for r in ingest_day(work / "landing", START + timedelta(days=i), now=now).rows]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    demo_texts = list(dict.fromkeys(t for row in rows for t in _texts(row)))
    demo_hits = entry_hits(redactor, demo_texts, entries)

    print(f"Banking77 train: {len(banking):,} queries, test: {len(test_split):,}; public prompts and answers: {len(public):,} texts; "
          f"demo logs: {len(rows):,} rows, {len(demo_texts):,} distinct texts")
    print(f"{'entry':<22} {'list':<8} {'banking77':>10} {'b77 test':>9} {'public':>7} {'demo':>6}")
    for entry in entries:
        where = "default" if entry in DEFAULT_ALLOW_LIST else "demo"
        public_need = banking_hits[entry] + test_hits[entry] + public_hits[entry]
        flag = ("   <- no public hit" if where == "default" and not public_need
                else "   <- public hit, not in the default" if where == "demo" and public_need else "")
        print(f"{entry:<22} {where:<8} {banking_hits[entry]:>10} {test_hits[entry]:>9} {public_hits[entry]:>7} "
              f"{demo_hits[entry]:>6}{flag}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
