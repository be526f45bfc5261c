"""`eval-pipeline ui` starts dagster dev on the data home, and the UI serves the ingest assets with their checks."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def graphql(port: int, query: str) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def test_ui_shows_ingest_assets_and_checks(tmp_path):
    port = free_port()
    cli = Path(sys.executable).parent / "eval-pipeline"
    proc = subprocess.Popen([str(cli), "ui", "--home", str(tmp_path / "home"), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2)
                break
            except OSError:
                assert proc.poll() is None, "dagster dev exited"
                assert time.time() < deadline, "dagster dev did not answer within 120 s"
                time.sleep(1)
        data = graphql(port, "{ assetNodes { assetKey { path } groupName isPartitioned "
                             "assetChecksOrError { ... on AssetChecks { checks { name blocking } } } } }")
        nodes = {tuple(n["assetKey"]["path"]): n for n in data["data"]["assetNodes"]}
        assert {("landing_manifest",), ("raw_logs",), ("quarantined_logs",)} <= set(nodes)
        assert nodes[("raw_logs",)]["groupName"] == "ingest" and nodes[("raw_logs",)]["isPartitioned"]
        checks = {c["name"]: c["blocking"] for c in nodes[("raw_logs",)]["assetChecksOrError"]["checks"]}
        assert checks == {"records_reconcile": True, "raw_logs_expectations": True}
        # the later domains are in the lineage too, with their groups
        groups = {n["assetKey"]["path"][0]: n["groupName"] for n in data["data"]["assetNodes"]}
        assert {groups[k] for k in ("redacted_logs", "log_embeddings", "log_clusters", "cluster_drift", "eval_set")} == {
            "privacy", "embeddings", "clustering", "sampling"}
        # the instance lives under the data home
        assert (tmp_path / "home" / "dagster" / "dagster.yaml").exists()
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
