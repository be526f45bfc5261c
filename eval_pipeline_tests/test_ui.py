"""`eval-pipeline ui` starts dagster dev on the data home, and the UI serves the ingest assets with their checks."""

from dagster_dev import dagster_dev, graphql


def test_ui_shows_ingest_assets_and_checks(tmp_path):
    with dagster_dev(tmp_path / "home", tmp_path / "dagster-dev.log") as base:
        data = graphql(base, "{ assetNodes { assetKey { path } groupName isPartitioned "
                             "assetChecksOrError { ... on AssetChecks { checks { name blocking } } } } }")
        nodes = {tuple(n["assetKey"]["path"]): n for n in data["data"]["assetNodes"]}
        assert {("landing_manifest",), ("raw_logs",), ("quarantined_logs",)} <= set(nodes)
        assert nodes[("raw_logs",)]["groupName"] == "ingest" and nodes[("raw_logs",)]["isPartitioned"]
        checks = {c["name"]: c["blocking"] for c in nodes[("raw_logs",)]["assetChecksOrError"]["checks"]}
        assert checks == {"records_reconcile": True, "raw_logs_expectations": True}
        # the later domains are in the lineage too, with their groups
        groups = {n["assetKey"]["path"][0]: n["groupName"] for n in data["data"]["assetNodes"]}
        assert {groups[k] for k in ("redacted_logs", "log_embeddings", "log_clusters", "cluster_drift", "eval_set",
                                    "model_registry", "scorecard")} == {
            "privacy", "embeddings", "clustering", "sampling", "registry", "evaluation"}
        # the instance lives under the data home
        assert (tmp_path / "home" / "dagster" / "dagster.yaml").exists()
