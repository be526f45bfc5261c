"""The deployment in deploy/ is consistent: Dagster accepts its instance settings, every setting
is documented, the image copies files that exist, the compose file wires its services to each
other, and the scale plan's arithmetic holds. Fast, no network, no Docker."""

from __future__ import annotations

import copy
import importlib.util
import re
import shlex
import shutil
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from dagster._config import process_config
from dagster._core.errors import DagsterInvalidConfigError
from dagster._core.instance.config import dagster_instance_config
from dagster._core.instance.ref import InstanceRef
from dagster._core.launcher import DefaultRunLauncher, RunLauncher
from dagster._core.run_coordinator import QueuedRunCoordinator, RunCoordinator
from dagster._core.storage.config import pg_config

from eval_pipeline.defs.ingest.sensors import ingest_job
from eval_pipeline.defs.sampling.schedules import monthly_refresh_job

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
PG_ENV = {"DAGSTER_PG_USERNAME": "evals", "DAGSTER_PG_PASSWORD": "s3cret", "DAGSTER_PG_HOST": "db.internal",
          "DAGSTER_PG_DB": "dagster"}
# The settings every deployment document must name (fixed with the object-storage work).
SETTINGS = ["EVAL_PIPELINE_HOME", "EVAL_PIPELINE_STORAGE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "EVAL_PIPELINE_RAW_STORAGE",
            "EVAL_PIPELINE_RAW_AWS_ACCESS_KEY_ID", "EVAL_PIPELINE_RAW_AWS_SECRET_ACCESS_KEY",
            "EVAL_PIPELINE_RAW_AWS_SESSION_TOKEN", "EVAL_PIPELINE_EXECUTOR", "EVAL_PIPELINE_DASK_ADDRESS"]


def env_example() -> dict[str, str | None]:
    """Variables of deploy/env.example: name -> value, None for a commented-out (unset) one."""
    found: dict[str, str | None] = {}
    for line in (DEPLOY / "env.example").read_text().splitlines():
        m = re.fullmatch(r"(#\s*)?([A-Z][A-Z0-9_]*)=(.*)", line.strip())
        if m:
            found[m[2]] = None if m[1] else m[3]
    return found


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yaml").read_text())


def command(service: dict) -> list[str]:
    cmd = service["command"]
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]


def option(cmd: list[str], *names: str) -> str:
    for name in names:
        if name in cmd:
            return cmd[cmd.index(name) + 1]
    raise AssertionError(f"{' '.join(cmd)}: none of {names}")


@pytest.fixture
def instance_dir(tmp_path, monkeypatch) -> Path:
    """deploy/dagster.yaml as an instance folder, with the variables it references set."""
    shutil.copyfile(DEPLOY / "dagster.yaml", tmp_path / "dagster.yaml")
    for name, value in PG_ENV.items():
        monkeypatch.setenv(name, value)
    return tmp_path


# --- (a) Dagster accepts the instance settings ---------------------------------------------------


def test_dagster_yaml_passes_dagsters_instance_schema(instance_dir):
    config, custom_class = dagster_instance_config(str(instance_dir))
    assert custom_class is None
    assert config["telemetry"] == {"enabled": False}
    assert config["storage"]["postgres"]["postgres_db"]["password"] == {"env": "DAGSTER_PG_PASSWORD"}
    assert "run_queue" not in config and "concurrency" not in config  # the limits live in one place


def test_postgres_storage_resolves_from_the_environment(instance_dir, monkeypatch):
    ref = InstanceRef.from_dir(str(instance_dir))
    assert (ref.storage_data.module_name, ref.storage_data.class_name) == ("dagster_postgres", "DagsterPostgresStorage")
    # DagsterPostgresStorage.config_type() is this schema (dagster_postgres/storage.py); validate and
    # resolve the {env: ...} references as Dagster does when the instance starts
    resolved = process_config(pg_config(), ref.storage_data.config_dict)
    assert resolved.success, resolved.errors
    db = resolved.value["postgres_db"]
    assert (db["username"], db["password"], db["hostname"], db["db_name"], db["port"]) == (
        "evals", "s3cret", "db.internal", "dagster", 5432)
    monkeypatch.delenv("DAGSTER_PG_PASSWORD")
    assert not process_config(pg_config(), ref.storage_data.config_dict).success


def test_run_queue_limits_day_runs_and_the_monthly_run_by_the_jobs_tags(instance_dir):
    ref = InstanceRef.from_dir(str(instance_dir))
    coordinator = ref.run_coordinator_data.rehydrate(RunCoordinator)
    assert isinstance(coordinator, QueuedRunCoordinator)
    queue = coordinator.get_run_queue_config()
    limits = {(lim["key"], repr(lim.get("value"))): lim["limit"] for lim in queue.tag_concurrency_limits}
    (day_key, day_value), = ingest_job.run_tags.items()
    (month_key, month_value), = monthly_refresh_job.run_tags.items()
    assert 1 <= limits[(day_key, repr(day_value))] <= queue.max_concurrent_runs
    assert limits[(month_key, repr(month_value))] == 1  # the monthly steps are single-writer
    assert limits[("dagster/partition", repr({"applyLimitPerUniqueValue": True}))] == 1  # one run per partition
    assert isinstance(ref.run_launcher_data.rehydrate(RunLauncher), DefaultRunLauncher)
    assert ref.settings["run_retries"]["enabled"] and ref.settings["run_monitoring"]["enabled"]


def test_a_broken_instance_file_is_refused(instance_dir):
    good = yaml.safe_load((instance_dir / "dagster.yaml").read_text())
    misspelt = copy.deepcopy(good)
    misspelt["run_coordinator"]["config"]["max_concurent_runs"] = 3
    no_host = copy.deepcopy(good)
    del no_host["storage"]["postgres"]["postgres_db"]["hostname"]
    both = {**copy.deepcopy(good), "concurrency": {"runs": {"max_concurrent_runs": 2}}}

    (instance_dir / "dagster.yaml").write_text(yaml.safe_dump(misspelt))
    with pytest.raises(DagsterInvalidConfigError, match="max_concurent_runs"):
        InstanceRef.from_dir(str(instance_dir)).run_coordinator_data.rehydrate(RunCoordinator)
    assert not process_config(pg_config(), no_host["storage"]["postgres"]).success
    (instance_dir / "dagster.yaml").write_text(yaml.safe_dump(both))
    with pytest.raises(DagsterInvalidConfigError):
        dagster_instance_config(str(instance_dir))


def test_workspace_points_at_the_code_server():
    (entry,) = yaml.safe_load((DEPLOY / "workspace.yaml").read_text())["load_from"]
    server = entry["grpc_server"]
    dagster_tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["dagster"]
    assert server["location_name"] == dagster_tool["code_location_name"]
    code = compose()["services"][server["host"]]
    cmd = command(code)
    assert cmd[:3] == ["dagster", "code-server", "start"]
    assert int(option(cmd, "-p", "--port")) == server["port"]
    assert option(cmd, "-m", "--module-name") == dagster_tool["module_name"]
    assert option(cmd, "--location-name") == server["location_name"]


# --- (b) every setting is documented; the image copies files that exist --------------------------


def test_every_setting_is_in_env_example_and_documented():
    names = env_example()
    missing = [name for name in SETTINGS if name not in names]
    assert not missing, f"deploy/env.example lacks {missing}"
    readme = (DEPLOY / "README.md").read_text()
    undocumented = [name for name in names if f"`{name}`" not in readme]
    assert not undocumented, f"deploy/README.md does not describe {undocumented}"
    # and nothing in it looks like a real secret
    for name, value in names.items():
        if value and re.search(r"SECRET|PASSWORD|KEY_ID|TOKEN", name):
            assert value.startswith("change-me"), f"{name} has a value in env.example"
    assert "deploy/.env" in (ROOT / ".gitignore").read_text().split()


def dockerfile_copies() -> list[tuple[list[str], str]]:
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    copies = []
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[0] == "COPY" and not any(p.startswith("--from") for p in parts):
            args = [p for p in parts[1:] if not p.startswith("--")]
            copies.append((args[:-1], args[-1]))
    return copies


def test_every_file_the_dockerfile_copies_exists():
    copies = dockerfile_copies()
    sources = [src for srcs, _ in copies for src in srcs]
    assert {"requirements.lock", "pyproject.toml", "eval_pipeline/", "deploy/dagster.yaml"} <= set(sources)
    absent = [src for src in sources if not (ROOT / src).exists()]
    assert not absent, f"the Dockerfile copies what the repository does not have: {absent}"
    text = (DEPLOY / "Dockerfile").read_text()
    assert text.startswith("# syntax") and "FROM python:3.11-slim" in text
    # torch first, pinned as the lock's comment says, from the CPU index
    assert text.index("pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu") < text.index(
        "-r requirements.lock")
    # the deploy extras are pinned on the release line of the lock's Dagster libraries
    lock = dict(line.split("==") for line in (ROOT / "requirements.lock").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    libraries = lock["dagster-duckdb"]
    for name in ("requirements-deploy.txt", "requirements-optional.txt"):
        pins = dict(line.split("#")[0].split("==") for line in (DEPLOY / name).read_text().splitlines()
                    if "==" in line.split("#")[0])
        for package, version in pins.items():
            if package.startswith("dagster-"):
                assert version.strip() == libraries, f"{name}: {package}=={version.strip()}, the lock has {libraries}"
            assert package.strip() not in lock, f"{name} pins {package} again; the lock has it"


# --- (c) the compose file wires one image to itself --------------------------------------------


def test_compose_services_share_one_image_and_the_data_home():
    services = compose()["services"]
    assert {"postgres", "s3", "webserver", "daemon", "user-code", "dask-scheduler"} <= set(services)
    workers = [name for name, s in services.items() if "command" in s and command(s)[:2] == ["dask", "worker"]]
    assert len(workers) >= 2
    pipeline = ["webserver", "daemon", "user-code", "dask-scheduler", *workers]
    images = {services[name]["image"] for name in pipeline}
    assert len(images) == 1, f"the pipeline's services run different images: {images}"
    for name in pipeline:
        build = services[name]["build"]
        assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
        mounts = {v.split(":")[1] if ":" in v else v: v.split(":")[0] for v in services[name]["volumes"]}
        home = env_example()["EVAL_PIPELINE_HOME"]
        assert mounts.get(home) == "data-home", f"{name} does not mount the data home at {home}"
        # spool files are per process: never on the shared volume (deploy/README.md, Limits)
        assert {f"{home}/spool", f"{home}/restricted/spool"} <= {k for k, v in mounts.items() if k == v}
        assert services[name]["env_file"] == ".env"
    assert "cp deploy/env.example deploy/.env" in (DEPLOY / "README.md").read_text()
    assert f"EVAL_PIPELINE_HOME={home}" in (DEPLOY / "Dockerfile").read_text()  # the image's default agrees


def test_compose_commands_agree_with_workspace_settings_and_each_other():
    services = compose()["services"]
    workspace_path = next(dest for srcs, dest in dockerfile_copies() if "deploy/workspace.yaml" in srcs)
    workspace_file = "/opt/eval-pipeline/" + workspace_path.rstrip("/") + "/workspace.yaml"
    assert option(command(services["webserver"]), "-w", "--workspace") == workspace_file
    assert option(command(services["daemon"]), "-w", "--workspace") == workspace_file
    assert command(services["daemon"])[:2] == ["dagster-daemon", "run"]

    settings = env_example()
    scheduler = command(services["dask-scheduler"])
    assert scheduler[:2] == ["dask", "scheduler"]
    address = f"tcp://dask-scheduler:{option(scheduler, '--port')}"
    assert settings["EVAL_PIPELINE_DASK_ADDRESS"] == address
    for name, service in services.items():
        cmd = command(service) if "command" in service else []
        if cmd[:2] == ["dask", "worker"]:
            assert cmd[2] == address, f"{name} talks to {cmd[2]}"
            assert option(cmd, "--nthreads") == "1" and option(cmd, "--nworkers") == "1"
    assert settings["DAGSTER_PG_HOST"] in services and services["postgres"]["image"].startswith("postgres")
    assert re.fullmatch(r"https?://s3:\d+", settings["AWS_ENDPOINT_URL"]) and "s3" in services
    for name, service in services.items():  # files mounted from the repository exist
        for volume in service.get("volumes", []):
            if volume.startswith("./"):
                assert (DEPLOY / volume.split(":")[0]).exists(), f"{name} mounts a missing {volume}"


# --- the scale plan's arithmetic -----------------------------------------------------------------


def scale_plan():
    spec = importlib.util.spec_from_file_location("scale_plan", ROOT / "benchmarks" / "scale_plan.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["scale_plan"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("days", [30, 31])
def test_scale_plan_objects_bytes_and_wall_time(days):
    sp = scale_plan()
    records = 1_000_000
    p = sp.plan(records, days, [1, 2, 4, 8, 16, 32, 64])
    assert p.total_objects == days * len(sp.DAILY_TABLES) + len(sp.MONTHLY_TABLES) == days * 4 + 1
    assert p.bytes["log_embeddings"] == records * sp.BYTES_PER_ROW_SNAPPY["log_embeddings"]
    assert p.bytes["quarantined_logs"] == pytest.approx(records * sp.QUARANTINED_PER_RECORD
                                                        * sp.BYTES_PER_ROW_SNAPPY["quarantined_logs"])
    totals = [row.total_s for row in p.rows]
    assert all(later <= earlier for earlier, later in zip(totals, totals[1:]))
    assert totals[0] > totals[1] > totals[2] > totals[3]  # more workers, fewer rounds of days
    assert all(row.total_s > p.serial_s for row in p.rows)
    assert p.rows[-1].rounds == 1 and p.rows[-1].total_s == p.rows[-2].total_s  # 64 > days: no faster
    one = p.rows[0]
    assert one.rounds == days and one.total_s == pytest.approx(p.serial_s + days * p.day_seconds)
    assert one.day_phase_s == pytest.approx(records * sp.seconds_per_record() + days * sp.DAY_RUN_FIXED_SECONDS)
    assert all(row.total_cold_s >= row.total_s for row in p.rows)
    assert p.monthly_mb[0] >= sp.MONTHLY_PEAK_MB[1_000_000] - 1e-6  # never below the measured 1M peak


def test_scale_plan_grows_with_the_month():
    sp = scale_plan()
    small, large = sp.plan(100_000, 31, [4]), sp.plan(10_000_000, 31, [4])
    assert large.serial_s > small.serial_s and large.day_seconds > small.day_seconds
    assert large.monthly_mb[0] > small.monthly_mb[0] and large.day_worker_mb >= small.day_worker_mb
    assert sum(large.bytes.values()) == pytest.approx(100 * sum(small.bytes.values()))
    with pytest.raises(ValueError):
        sp.plan(0, 31, [1])
