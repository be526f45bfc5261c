"""Every path the project writes derives from one data home (``EVAL_PIPELINE_HOME``, default ``./data``).

Resolving a data home touches nothing on disk: a folder is created by whatever first writes into
it (:func:`make_folder`; the IO managers create their DuckDB file's folder when they open it), or
all at once by :meth:`DataHome.ensure` for the commands that write.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

__all__ = ["HOME_ENV", "DEFAULT_HOME", "DataHome", "make_folder"]

HOME_ENV = "EVAL_PIPELINE_HOME"
DEFAULT_HOME = "./data"


def make_folder(path: str | os.PathLike[str], owner_only: bool = False) -> Path:
    """``path`` as a folder, created with its parents when missing (idempotent); ``owner_only``
    makes it 0700 (the raw zone's folders: ``landing/``, ``restricted/``)."""
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    if owner_only and stat.S_IMODE(folder.stat().st_mode) != 0o700:
        folder.chmod(0o700)
    return folder


@dataclass(frozen=True)
class DataHome:
    """The data home and the places inside it.

    ``landing/``            log files to ingest (any subfolders; any mix of dates per file); raw, owner-only
    ``restricted/``         the raw zone, owner-only: ``raw.duckdb`` holds raw_logs and quarantined_logs
    ``warehouse.duckdb``    the embedded default store for everything else, one DuckDB schema per domain
    ``spool/<host>/``       Parquet files of day tables in transit (``lib/storage/spool.py``; the raw zone's in ``restricted/spool/<host>/``)
    ``dagster/``            DAGSTER_HOME: run history, event log, schedules' and sensors' state
    ``cache/``              content-addressed caches (parsed-file day index, model caches)
    ``demo_truth/``         what the demo generator knows about its logs (for simulated annotators)
    ``settings.yaml``       the deployment's settings, read when the definitions are built (optional)
    """

    root: Path

    @classmethod
    def resolve(cls, root: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> "DataHome":
        """The data home given explicitly, else from ``EVAL_PIPELINE_HOME``, else ``./data`` (nothing is created)."""
        env = os.environ if env is None else env
        chosen = root if root is not None else env.get(HOME_ENV) or DEFAULT_HOME
        return cls(Path(chosen).expanduser().resolve())

    @property
    def settings_file(self) -> Path:
        return self.root / "settings.yaml"

    @property
    def landing(self) -> Path:
        return self.root / "landing"

    @property
    def restricted(self) -> Path:
        return self.root / "restricted"

    @property
    def raw_warehouse(self) -> Path:
        return self.restricted / "raw.duckdb"

    @property
    def warehouse(self) -> Path:
        return self.root / "warehouse.duckdb"

    @property
    def dagster_home(self) -> Path:
        return self.root / "dagster"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def redaction_cache(self) -> Path:
        """Spans the PII analyzer found per distinct text (offsets and types, no text)."""
        return self.cache / "redaction" / "analysis.sqlite"

    @property
    def labels_inbox(self) -> Path:
        """Completed annotations dropped here (Label Studio JSON exports, or the plain JSONL/CSV)."""
        return self.root / "labels" / "inbox"

    @property
    def labels_outbox(self) -> Path:
        """Annotation tasks written here, one folder per eval-set version."""
        return self.root / "labels" / "outbox"

    def failure_review(self, model_version: str) -> Path:
        """A model version's failure review: ``tasks/`` written for reviewers, ``inbox/`` for their
        completed files (``<home>/labels/review/<name>/<version>``)."""
        name, version = model_version.split(":", 1)
        return self.root / "labels" / "review" / name / version

    @property
    def reports(self) -> Path:
        """Files written for people to look at (cluster maps, changelogs); nothing reads them back."""
        return self.root / "reports"

    @property
    def registry(self) -> Path:
        """Registered model versions, one JSON line each, appended by ``eval-pipeline register-model``."""
        return self.root / "registry" / "models.jsonl"

    @property
    def recordings(self) -> Path:
        """Recorded model outputs (replayed by the ``recorded`` provider), e.g. the demo's."""
        return self.root / "registry" / "recordings"

    @property
    def demo_truth(self) -> Path:
        return self.root / "demo_truth"

    def ensure(self) -> "DataHome":
        """Create the folders (idempotent); raw places are owner-only (0700). For the commands
        that write into the data home; loading or building the definitions never calls it."""
        for path in (self.root, self.dagster_home, self.cache):
            make_folder(path)
        for path in (self.landing, self.restricted):
            make_folder(path, owner_only=True)
        return self
