"""Wall time of evaluating a model version, per tier (not a test).

    .venv/bin/python benchmarks/evaluation.py [--home DATA_HOME] [--latency 0.3] [--workers 4]

On the demo data (``--home`` of an earlier ``eval-pipeline demo``; without it the demo is run
into a temporary folder first, about 3 minutes), times ``eval-pipeline evaluate`` in-process:

1. the recorded provider, continuous then deep tier: the candidate alone (its baseline already
   scored on that tier), with the seconds of each Dagster step;
2. an OpenAI-compatible endpoint: a local server on 127.0.0.1 (the real ``openai`` client on the
   other side) that answers each request after ``--latency`` seconds, as a hosted model would,
   with ``--workers`` requests in flight;
3. the recorded provider on a synthetic set ``--scale`` times the test set's 420 examples (the
   deep tier of a larger set; default 5, 2,100 examples).
"""

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def step_seconds(instance, run_id: str) -> dict[str, float]:
    return {s.step_key: s.end_time - s.start_time for s in instance.get_run_step_stats(run_id)
            if s.end_time and s.start_time}


def main() -> int:
    warnings.filterwarnings("ignore")
    parser = argparse.ArgumentParser()
    parser.add_argument("--home", help="a data home the demo ran in (default: run the demo into a temp folder)")
    parser.add_argument("--latency", type=float, default=0.3, help="seconds the simulated endpoint takes per request")
    parser.add_argument("--workers", type=int, default=4, help="requests in flight (the evaluation resource's max_workers)")
    parser.add_argument("--scale", type=int, default=5, help="synthetic set size as a multiple of 420 examples")
    args = parser.parse_args()

    from eval_pipeline.demo.models import BASELINE_VERSION, CANDIDATE_VERSION, DEMO_MODEL
    from eval_pipeline.demo.settings import THRESHOLDS as DEMO_THRESHOLDS
    from eval_pipeline.lib.core.paths import DataHome
    from eval_pipeline.runs import evaluate_model, instance_for, register_demo_models

    work = Path(tempfile.mkdtemp(prefix="evaluation-bench-"))
    try:
        if args.home:
            shutil.copytree(args.home, work / "home")
        else:
            print("running the demo first (eval-pipeline demo) ...", flush=True)
            t0 = time.perf_counter()
            subprocess.run([str(Path(sys.executable).parent / "eval-pipeline"), "demo", "--home", str(work / "home")],
                           check=True, stdout=subprocess.DEVNULL)
            print(f"  demo: {time.perf_counter() - t0:.0f} s")
        home = DataHome.resolve(work / "home")
        register_demo_models(home)  # a home from before the evaluation existed has none yet
        instance = instance_for(home)
        baseline, candidate = f"{DEMO_MODEL}:{BASELINE_VERSION}", f"{DEMO_MODEL}:{CANDIDATE_VERSION}"
        quiet = lambda *_: None  # noqa: E731
        gates = str(DEMO_THRESHOLDS)  # the demo's task types, with their critical slices, as the demo gates them

        print(f"\nrecorded provider, {candidate} against {baseline}:")
        print(f"  {'tier':<11} {'examples':>8} {'wall s':>7}  verdict  steps (s)")
        for tier in ("continuous", "deep"):
            evaluate_model(home, baseline, tier=tier, thresholds=gates, log=quiet)  # the baseline on this tier first
            t0 = time.perf_counter()
            outcome = evaluate_model(home, candidate, tier=tier, thresholds=gates, log=quiet)
            wall = time.perf_counter() - t0
            if outcome.error:
                print(f"  {tier}: error: {outcome.error}")
                return 1
            steps = step_seconds(instance, outcome.run_ids[-1])
            detail = ", ".join(f"{k} {v:.2f}" for k, v in steps.items())
            print(f"  {tier:<11} {outcome.scorecard['counts']['examples']:>8} {wall:>7.2f}  "
                  f"{outcome.scorecard['verdict']:<7}  {detail}")

        sys.path.insert(0, str(ROOT / "eval_pipeline_tests"))
        from openai_server import Reply, ScriptedServer

        from eval_pipeline.lib.registry.versions import ModelRegistry, ModelVersion
        from eval_pipeline.runs import load_eval_set

        _, rows = load_eval_set(home)
        answers = {r["messages"][-1]["content"]: r["production_output"] or "" for r in rows}
        with ScriptedServer() as server:
            server.delay = args.latency
            server.responder = lambda body: Reply(content=answers.get(body["messages"][-1]["content"], ""))
            version = f"endpoint-{int(time.time())}"
            ModelRegistry(home.registry).register(ModelVersion(
                name=DEMO_MODEL, version=version, provider="openai-compatible", base_url=server.base_url,
                model="simulated", registered_at=datetime.now(timezone.utc)))
            print(f"\nOpenAI-compatible endpoint on 127.0.0.1, {args.latency:.2f} s per request, "
                  f"{args.workers} in flight:")
            for tier in ("continuous", "deep"):
                before = len(server.requests)
                t0 = time.perf_counter()
                outcome = evaluate_model(home, f"{DEMO_MODEL}:{version}", baseline=baseline, tier=tier,
                                         thresholds=gates, max_workers=args.workers, log=quiet)
                wall = time.perf_counter() - t0
                sent = len(server.requests) - before
                print(f"  {tier:<11} {sent:>4} requests {wall:>7.2f} s wall  (at most {server.max_in_flight} in flight; "
                      f"{sent * args.latency / args.workers:.1f} s is the latency floor)"
                      + (f"  error: {outcome.error}" if outcome.error else ""))

        from evaluation_fixtures import evaluation_home, register

        big, examples, _ = evaluation_home(work / "big", scale=args.scale)
        register(big, "1", "baseline", provider="recorded", recorded_path=str(big.recordings / "baseline.jsonl"))
        register(big, "2", provider="recorded", recorded_path=str(big.recordings / "regressed.jsonl"))
        print(f"\nrecorded provider, synthetic set of {len(examples):,} examples (router:2 against router:1):")
        for tier in ("continuous", "deep"):
            evaluate_model(big, "router:1", tier=tier, thresholds=gates, log=quiet)
            t0 = time.perf_counter()
            outcome = evaluate_model(big, "router:2", tier=tier, thresholds=gates, log=quiet)
            wall = time.perf_counter() - t0
            steps = step_seconds(instance_for(big), outcome.run_ids[-1])
            print(f"  {tier:<11} {outcome.scorecard['counts']['examples']:>6} examples {wall:>6.2f} s  "
                  f"{outcome.scorecard['verdict']:<7}  " + ", ".join(f"{k} {v:.2f}" for k, v in steps.items()))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
