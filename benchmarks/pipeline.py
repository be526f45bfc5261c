"""Where the pipeline's time goes: runs `refresh` on demo logs and prints seconds per step (not a test).

    .venv/bin/python benchmarks/pipeline.py [--records 20000] [--days 20]

Prints, per Dagster step (asset or check), the total seconds over all runs and its share of the
summed step time, plus the wall time of the whole refresh and records/s.
"""

import argparse
import shutil
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from datetime import date
from pathlib import Path


def main() -> int:
    warnings.filterwarnings("ignore")
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=20)
    parser.add_argument("--start", default="2026-02-01", help="first day; the days must fit in one month")
    args = parser.parse_args()

    from eval_pipeline.lib.demo_logs import generate_logs
    from eval_pipeline.lib.paths import DataHome
    from eval_pipeline.runs import instance_for, refresh_month

    start = date.fromisoformat(args.start)
    work = Path(tempfile.mkdtemp(prefix="pipeline-bench-"))
    try:
        home = DataHome.resolve(work / "home").ensure()
        summary = generate_logs(home.landing / "demo", start, args.days, args.records // args.days, seed=5,
                                truth_dir=home.demo_truth)
        t0 = time.perf_counter()
        result = refresh_month(home, start.strftime("%Y-%m"), log=lambda *_: None)
        wall = time.perf_counter() - t0
        instance = instance_for(home)
        per_step: dict[str, float] = defaultdict(float)
        for run_id in result.run_ids:
            for stat in instance.get_run_step_stats(run_id):
                if stat.start_time and stat.end_time:
                    per_step[stat.step_key] += stat.end_time - stat.start_time
        total = sum(per_step.values())
        print(f"{summary.records:,} demo records over {args.days} days; refresh wall time {wall:.1f} s "
              f"({summary.records / wall:,.0f} records/s){'' if result.success else '; FAILED: ' + str(result.failed)}")
        print(f"{'step':<40} {'seconds':>9} {'share':>7}")
        for step, seconds in sorted(per_step.items(), key=lambda kv: -kv[1]):
            print(f"{step:<40} {seconds:>9.1f} {seconds / total:>7.1%}")
        print(f"{'sum of steps':<40} {total:>9.1f}   (the rest of the wall time is run start-up and event logging)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
