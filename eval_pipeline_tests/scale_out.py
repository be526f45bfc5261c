"""Fixtures for the scale-out tests: an S3 endpoint on 127.0.0.1 (moto's server; boto3 and
pyarrow speak the real protocol to it) and a Dask cluster of worker processes that start in the
environment the pipeline's runs have, as workers of a real cluster would.

Order matters: a worker process keeps the environment it was started with, so everything the
workers need (``EVAL_PIPELINE_HOME``, the storage and AWS settings, ``EVAL_PIPELINE_DASK_ADDRESS``)
is set before :func:`dask_cluster` starts them.
"""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import eval_pipeline
from eval_pipeline.defs.executors import DASK_ADDRESS_ENV, EXECUTOR_ENV
from eval_pipeline.lib.core.paths import HOME_ENV, DataHome

__all__ = ["DaskCluster", "S3Endpoint", "ScaleOutEnv", "dask_cluster", "home_listing", "listing", "s3",
           "scale_out_env", "storage_env"]

BUCKET = "eval-lake"
# Folders of the user's home where the libraries this pipeline uses keep files (XDG caches and
# configs, Dagster's telemetry logs, Dask's config): compared file by file before and after.
TOOL_FOLDERS = (".cache", ".config", ".dagster", ".dask", ".local", ".aws")


def storage_env(bucket: str, name: str) -> dict[str, str]:
    """The object-storage settings of the data home ``name``: its large tables under one prefix of
    ``bucket`` (the raw zone under ``<prefix>/restricted``), for the workers and this process alike."""
    return {"EVAL_PIPELINE_STORAGE": f"s3://{bucket}/{name}"}


@dataclass(frozen=True)
class S3Endpoint:
    url: str
    bucket: str


@dataclass(frozen=True)
class ScaleOutEnv:
    """What the workers start with: the data home of the runs on the cluster, the working folder."""

    home: DataHome
    cwd: Path
    s3: S3Endpoint


@dataclass(frozen=True)
class DaskCluster:
    address: str
    worker_pids: frozenset[int]


@pytest.fixture
def s3(tmp_path, monkeypatch) -> Iterator[S3Endpoint]:
    """moto's S3 server on a free port of 127.0.0.1, with the bucket :data:`BUCKET`; the AWS
    variables (test credentials, ``AWS_ENDPOINT_URL``) point every client here and nowhere else."""
    pytest.importorskip("moto", reason="the scale-out tests need moto[server]")
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        url = f"http://{host}:{port}"
        for name, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                            "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": url,
                            "AWS_EC2_METADATA_DISABLED": "true",
                            # no profile or credentials file of the user's
                            "AWS_CONFIG_FILE": str(tmp_path / "aws" / "config"),
                            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "aws" / "credentials")}.items():
            monkeypatch.setenv(name, value)
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION"):
            monkeypatch.delenv(name, raising=False)
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        yield S3Endpoint(url=url, bucket=BUCKET)
        # moto keeps its buckets in this process, across servers: empty them for the next test
        urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST")).close()
    finally:
        server.stop()


@pytest.fixture
def scale_out_env(tmp_path, monkeypatch, s3) -> ScaleOutEnv:
    """The environment of the runs on the cluster, set in this process for the workers to inherit:
    the working folder an empty ``tmp_path/cwd``, ``EVAL_PIPELINE_HOME`` the data home
    ``tmp_path/dask-home``, its storage settings, this checkout first on ``PYTHONPATH`` (the
    workers import the package this process imported, not another install of it) and Dask's
    scratch space under ``tmp_path``."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    home = DataHome.resolve(tmp_path / "dask-home")
    monkeypatch.setenv(HOME_ENV, str(home.root))
    # as a deployment's environment would have it (runs open the instance from the data home
    # explicitly, and the Dask workers from the run's instance reference)
    monkeypatch.setenv("DAGSTER_HOME", str(home.dagster_home))
    for name, value in storage_env(s3.bucket, "dask-home").items():
        monkeypatch.setenv(name, value)
    checkout = Path(eval_pipeline.__file__).resolve().parent.parent
    helpers = Path(__file__).resolve().parent  # this module, for jobs defined in the tests
    paths = [str(checkout), str(helpers), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(paths))
    monkeypatch.delenv(EXECUTOR_ENV, raising=False)
    monkeypatch.delenv(DASK_ADDRESS_ENV, raising=False)
    return ScaleOutEnv(home=home, cwd=cwd, s3=s3)


@pytest.fixture
def dask_cluster(scale_out_env, tmp_path, monkeypatch) -> Iterator[DaskCluster]:
    """A ``distributed.LocalCluster`` of two single-threaded worker processes, and
    ``EVAL_PIPELINE_EXECUTOR=dask`` with its scheduler's address: the scheduler starts first, the
    workers once the address is in the environment (they rebuild the definitions, which read it)."""
    pytest.importorskip("dagster_dask", reason="the scale-out tests need dagster-dask")
    import dask
    from distributed import Client, LocalCluster

    with dask.config.set({"temporary-directory": str(tmp_path / "dask-scratch")}), \
            LocalCluster(n_workers=0, threads_per_worker=1, processes=True, dashboard_address=None,
                         host="127.0.0.1") as cluster:
        monkeypatch.setenv(EXECUTOR_ENV, "dask")
        monkeypatch.setenv(DASK_ADDRESS_ENV, cluster.scheduler_address)
        cluster.scale(2)
        with Client(cluster) as client:
            client.wait_for_workers(2, timeout=120)
            pids = client.run(os.getpid)
            yield DaskCluster(address=cluster.scheduler_address, worker_pids=frozenset(pids.values()))


def listing(root: Path) -> set[tuple[str, int, int]]:
    """(path under ``root``, size, modification time in ns) of every file and folder under it."""
    found = set()
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            try:
                stat = path.lstat()
            except FileNotFoundError:  # gone while walking
                continue
            found.add((str(path.relative_to(root)), stat.st_size if name in files else 0, stat.st_mtime_ns))
    return found


def home_listing(home: Path | None = None) -> set[tuple[str, int, int]]:
    """The user's home: the names at its top, and :func:`listing` of its :data:`TOOL_FOLDERS`."""
    home = Path.home() if home is None else home
    found = {(path.name, 0, 0) for path in home.iterdir()}
    for name in TOOL_FOLDERS:
        if (home / name).is_dir():
            found |= {(f"{name}/{path}", size, mtime) for path, size, mtime in listing(home / name)}
    return found
