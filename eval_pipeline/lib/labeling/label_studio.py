"""The annotation round trip through a running Label Studio server, instead of files moved by hand.

Plain Python (no Dagster import). Talks to the server through the official ``label-studio-sdk``.

* :func:`push` creates one project per rubric (title ``eval-pipeline <rubric>``; found again by that
  title, its labeling config brought up to date) and imports the tasks of that rubric, as the
  ``annotation_tasks`` asset wrote them for an eval-set version under
  ``<data home>/labels/outbox/<version>/label_studio/`` (:func:`outbox_tasks`). Tasks are keyed on the
  ``example_id`` kept in each task's data: a task whose example is already in the project is not
  imported again, so pushing twice (or pushing a later version that keeps an example) adds no
  duplicate and keeps the annotations already made.
* :func:`pull` downloads each such project's JSON export (the same file a person would export by
  hand, read by :func:`eval_pipeline.lib.labeling.annotation.read_annotation_folder`) into the labels inbox,
  one file per project named after it, written to a temporary name and renamed over the last pull.
  An unchanged export leaves the file as it was, so the inbox sensor sees no change.

The server's URL and API key come from ``LABEL_STUDIO_URL`` and ``LABEL_STUDIO_API_KEY``
(:meth:`Connection.from_env`). Every failure to reach or use the server is a
:class:`LabelStudioError` whose message names the URL and never holds the key.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eval_pipeline.lib.labeling.annotation import annotator_of

__all__ = [
    "KEY_ENV",
    "PROJECT_PREFIX",
    "URL_ENV",
    "Connection",
    "LabelStudioError",
    "PullResult",
    "PushResult",
    "RubricTasks",
    "TaskFileError",
    "export_file_name",
    "outbox_tasks",
    "project_title",
    "pull",
    "push",
]

URL_ENV = "LABEL_STUDIO_URL"
KEY_ENV = "LABEL_STUDIO_API_KEY"
#: Title of the project of a rubric: this prefix, then the rubric's name.
PROJECT_PREFIX = "eval-pipeline "
_IMPORT_BATCH = 500  # tasks per import request (the server accepts far more; this bounds one request's size)


class LabelStudioError(Exception):
    """The server could not be reached or refused a request; the message names the URL."""


def project_title(rubric_name: str) -> str:
    return f"{PROJECT_PREFIX}{rubric_name}"


def export_file_name(title: str) -> str:
    """The inbox file of a project: ``label_studio_<rubric>.json`` (the same name on every pull)."""
    name = title[len(PROJECT_PREFIX):] if title.startswith(PROJECT_PREFIX) else title
    return "label_studio_" + (re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "project") + ".json"


@dataclass(frozen=True)
class Connection:
    """Where the server is and the key to use (``repr`` hides the key)."""

    url: str
    api_key: str = field(repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Connection":
        """From ``LABEL_STUDIO_URL`` and ``LABEL_STUDIO_API_KEY``; a :class:`LabelStudioError` names
        what is missing."""
        env = os.environ if env is None else env
        url = (env.get(URL_ENV) or "").strip().rstrip("/")
        key = (env.get(KEY_ENV) or "").strip()
        missing = [name for name, value in ((URL_ENV, url), (KEY_ENV, key)) if not value]
        if missing:
            raise LabelStudioError(
                f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set: set {URL_ENV} to the "
                f"server (e.g. http://localhost:8080) and {KEY_ENV} to an access token of a user of it")
        if not re.match(r"^https?://[^/\s]+", url):
            raise LabelStudioError(f"{URL_ENV}={url!r} is not an http(s) URL (e.g. http://localhost:8080)")
        return cls(url, key)

    def client(self):
        from label_studio_sdk.client import LabelStudio

        return LabelStudio(base_url=self.url, api_key=self.api_key, timeout=60)

    def error(self, err: BaseException, doing: str) -> LabelStudioError:
        """``err`` (raised by the SDK or the HTTP client while ``doing``) as one line naming the URL."""
        import httpx
        from label_studio_sdk.core.api_error import ApiError

        if isinstance(err, ApiError):
            detail = _detail(err.body)
            hint = {401: "the API key was refused (check LABEL_STUDIO_API_KEY, and that the token type is "
                         "enabled for the organization)",
                    403: "the key's user may not do this",
                    404: "not found (is LABEL_STUDIO_URL the Label Studio server's address?)"}.get(err.status_code)
            text = f"HTTP {err.status_code}" + (f": {hint}" if hint else "") + (f" ({detail})" if detail else "")
        elif isinstance(err, httpx.TimeoutException):
            text = "the server did not answer in time"
        elif isinstance(err, httpx.HTTPError):
            text = f"cannot reach the server ({type(err).__name__}: {err})"
        elif isinstance(err, (ValueError, TypeError)):  # e.g. a page that is not the API's JSON
            text = f"the answer is not Label Studio's API ({type(err).__name__}: {err})"
        else:
            text = f"{type(err).__name__}: {err}"
        return LabelStudioError(self.mask(f"Label Studio at {self.url}: {doing}: {text}"))

    def mask(self, text: str) -> str:
        """``text`` with the API key replaced, wherever it appears."""
        return text.replace(self.api_key, "***") if self.api_key else text


def _detail(body: Any) -> str:
    if isinstance(body, Mapping):
        for key in ("detail", "message", "error", "validation_errors"):
            if body.get(key):
                return " ".join(str(body[key]).split())[:300]
        return ""
    return " ".join(str(body or "").split())[:300]


def _call(conn: Connection, doing: str, fn, *args, **kwargs):
    import httpx
    from label_studio_sdk.core.api_error import ApiError

    try:
        return fn(*args, **kwargs)
    except (ApiError, httpx.HTTPError, ValueError, TypeError) as err:
        raise conn.error(err, doing) from None


@dataclass
class PushResult:
    """One rubric's project after a push."""

    rubric: str
    project_id: int
    title: str
    created: bool
    config_updated: bool
    examples: int  # examples of this rubric in the version pushed
    imported: int  # tasks imported now
    already_there: int  # examples of the version that had a task already
    tasks_in_project: int


@dataclass
class PullResult:
    """One project's export, landed in the inbox."""

    title: str
    project_id: int
    path: Path
    tasks: int
    annotations: int  # submitted (not cancelled)
    cancelled: int
    annotators: list[str]  # ``user-<id>`` of whoever completed an annotation, as the reader names them
    changed: bool  # False: the export was the same as the file already there


def _projects_titled(client, conn: Connection, title: str) -> list[Any]:
    found = _call(conn, f"listing projects titled {title!r}", lambda: list(client.projects.list(title=title)))
    return sorted((p for p in found if p.title == title), key=lambda p: p.id)  # the filter may match a part


def _task_example_ids(client, conn: Connection, project_id: int) -> set[str]:
    def fetch() -> set[str]:
        ids = set()
        for task in client.tasks.list(project=project_id, fields="all"):
            eid = (task.data or {}).get("example_id")
            if isinstance(eid, str):
                ids.add(eid)
        return ids

    return _call(conn, f"listing the tasks of project {project_id}", fetch)


@dataclass
class RubricTasks:
    """What ``annotation_tasks`` wrote for one rubric of a version: the labeling config and the tasks."""

    rubric: str
    config: str
    tasks: list[dict[str, Any]]
    source: Path


class TaskFileError(ValueError):
    """The outbox has no such version, or a task file of it cannot be pushed; the message names the file."""


def outbox_tasks(outbox: str | os.PathLike[str], version: str = "latest") -> tuple[str, list[RubricTasks]]:
    """The Label Studio tasks and configs of one eval-set version from ``<outbox>/<version>/label_studio/``
    (``latest``: the highest ``v<N>``), as the ``annotation_tasks`` asset wrote them."""
    outbox = Path(outbox)
    versions = sorted((p.name for p in outbox.iterdir() if p.is_dir() and re.fullmatch(r"v\d+", p.name)),
                      key=lambda v: int(v[1:])) if outbox.is_dir() else []
    if not versions:
        raise TaskFileError(f"no annotation tasks in {outbox}: materialize annotation_tasks (e.g. `eval-pipeline "
                            "refresh`) first")
    name = versions[-1] if version == "latest" else version
    if name not in versions:
        raise TaskFileError(f"no annotation tasks of version {version!r} in {outbox}; versions: {', '.join(versions)}")
    folder = outbox / name / "label_studio"
    out = []
    for path in sorted(folder.glob("*.tasks.json")):
        rubric = path.name.removesuffix(".tasks.json")
        config_path = folder / f"{rubric}.config.xml"
        if not config_path.is_file():
            raise TaskFileError(f"{config_path}: missing (the labeling config of {path.name})")
        try:
            tasks = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as err:
            raise TaskFileError(f"{path}: not a JSON task list: {err}") from None
        if not isinstance(tasks, list):
            raise TaskFileError(f"{path}: expected a JSON list of tasks, got {type(tasks).__name__}")
        for i, task in enumerate(tasks):
            data = task.get("data") if isinstance(task, Mapping) else None
            if not isinstance(data, Mapping) or not isinstance(data.get("example_id"), str):
                raise TaskFileError(f"{path}: task index {i}: field 'data.example_id': missing or not text")
        out.append(RubricTasks(rubric, config_path.read_text(encoding="utf-8"), tasks, path))
    if not out:
        raise TaskFileError(f"{folder}: no <rubric>.tasks.json file")
    return name, out


def push(conn: Connection, rubric_tasks: Iterable[RubricTasks], client=None) -> list[PushResult]:
    """Push each rubric's tasks to its project; see the module doc."""
    client = client or conn.client()
    results = []
    for item in rubric_tasks:
        title, config = project_title(item.rubric), item.config
        found = _projects_titled(client, conn, title)
        created = config_updated = False
        if found:
            project_id = found[0].id
            current = _call(conn, f"reading project {project_id}", client.projects.get, project_id)
            if (current.label_config or "").strip() != config.strip():
                _call(conn, f"updating the labeling config of project {project_id} ({title!r})",
                      client.projects.update, project_id, label_config=config)
                config_updated = True
            existing = _task_example_ids(client, conn, project_id)
        else:
            project = _call(conn, f"creating project {title!r}", client.projects.create, title=title,
                            label_config=config,
                            description=f"Annotation tasks of rubric {item.rubric!r} from eval-pipeline.")
            project_id, created, existing = project.id, True, set()
        in_file = {t["data"]["example_id"] for t in item.tasks}
        new, queued = [], set()
        for task in item.tasks:
            eid = task["data"]["example_id"]
            if eid not in existing and eid not in queued:  # one task per example, in the file too
                new.append(task)
                queued.add(eid)
        for start in range(0, len(new), _IMPORT_BATCH):
            _call(conn, f"importing tasks into project {project_id} ({title!r})", client.projects.import_tasks,
                  project_id, request=new[start:start + _IMPORT_BATCH])
        results.append(PushResult(rubric=item.rubric, project_id=project_id, title=title, created=created,
                                  config_updated=config_updated, examples=len(in_file), imported=len(new),
                                  already_there=len(in_file & existing), tasks_in_project=len(existing) + len(new)))
    return results


def _write_if_changed(path: Path, data: bytes) -> bool:
    """Replace ``path`` by ``data`` atomically (a temporary file in the same folder, then a rename);
    False, and nothing written, when the file already holds exactly ``data``."""
    if path.is_file() and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    # the temporary name ends in .part, which neither the reader nor the inbox sensor looks at
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


def pull(conn: Connection, inbox: str | os.PathLike[str], client=None) -> list[PullResult]:
    """Download the JSON export of every project titled ``eval-pipeline ...`` into ``inbox``."""
    client = client or conn.client()
    inbox = Path(inbox)
    projects = _call(conn, "listing projects", lambda: [p for p in client.projects.list()
                                                         if (p.title or "").startswith(PROJECT_PREFIX)])
    seen: dict[str, int] = {}
    results = []
    for project in sorted(projects, key=lambda p: p.id):
        name = export_file_name(project.title)
        if name in seen:  # two projects of one title: the older one's file stays the rubric's
            continue
        seen[name] = project.id
        raw = _call(conn, f"exporting project {project.id} ({project.title!r})",
                    lambda: b"".join(client.projects.exports.download_sync(project.id, export_type="JSON",
                                                                           download_all_tasks=True)))
        try:
            tasks = json.loads(raw)
        except ValueError as err:
            raise conn.error(err, f"exporting project {project.id} ({project.title!r})") from None
        if not isinstance(tasks, list):
            raise LabelStudioError(conn.mask(f"Label Studio at {conn.url}: exporting project {project.id}: "
                                             f"expected a JSON list of tasks, got {type(tasks).__name__}"))
        annotations = [a for t in tasks if isinstance(t, Mapping)
                       for a in (t.get("annotations") or []) if isinstance(a, Mapping)]
        done = [a for a in annotations if not a.get("was_cancelled")]
        annotators = sorted({annotator_of(a) for a in done} - {None})
        data = (json.dumps(tasks, ensure_ascii=False, indent=1, sort_keys=True) + "\n").encode("utf-8")
        path = inbox / name
        changed = _write_if_changed(path, data)
        results.append(PullResult(title=project.title, project_id=project.id, path=path, tasks=len(tasks),
                                  annotations=len(done), cancelled=len(annotations) - len(done),
                                  annotators=annotators, changed=changed))
    return results

