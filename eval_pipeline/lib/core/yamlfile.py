"""Reading the project's YAML files (rubrics, thresholds) so that any content gives an error
naming the file and, where known, the line, and never a crash or a runaway.

Guards beyond ``yaml.safe_load``: the file must be UTF-8 (a byte-order mark is allowed), a
document may not expand to more than :data:`MAX_NODES` nodes through anchors and aliases (the
"billion laughs" file is a few lines long), and nesting too deep for the parser or an integer too
long for ``int()`` is reported, not raised.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

__all__ = ["MAX_NODES", "BoundedLoader", "YAMLFileError", "read_yaml_file"]

#: Nodes a document may expand to, counting every alias as a copy of its anchor.
MAX_NODES = 100_000


class YAMLFileError(ValueError):
    """A YAML file that cannot be read; the message starts with the file name."""


class BoundedLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a document expanding to more than :data:`MAX_NODES` nodes."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._sizes: dict[int, int] = {}

    def compose_node(self, parent: Any, index: Any) -> Any:
        node = super().compose_node(parent, index)
        size = self._sizes.get(id(node))
        if size is None:  # a new node (an alias returns its anchor's node, already sized)
            if isinstance(node, yaml.SequenceNode):
                size = 1 + sum(self._sizes.get(id(child), 1) for child in node.value)
            elif isinstance(node, yaml.MappingNode):
                size = 1 + sum(self._sizes.get(id(k), 1) + self._sizes.get(id(v), 1) for k, v in node.value)
            else:
                size = 1
            self._sizes[id(node)] = size
        if size > MAX_NODES:
            raise yaml.composer.ComposerError(
                None, None, f"the document expands to more than {MAX_NODES:,} values through anchors and aliases",
                node.start_mark)
        return node


def _problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    if mark is None:
        return f"invalid YAML: {problem}"
    return f"line {mark.line + 1}, column {mark.column + 1}: invalid YAML: {problem}"


def read_yaml_file(path: str | os.PathLike[str], loader: type[BoundedLoader] = BoundedLoader) -> Any:
    """The document of the YAML file at ``path`` (None for an empty file).

    Raises:
        YAMLFileError: not UTF-8, not YAML, too deep, too large or an unconvertible value; the
            message names the file and the line where the parser knows it.
        FileNotFoundError: the file does not exist (other OSErrors pass through as well).
    """
    path = Path(path)
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise YAMLFileError(f"{path}: line {line}: not UTF-8 text (byte {raw[exc.start]:#04x}); "
                            "save the file as UTF-8") from None
    try:
        return yaml.load(text, Loader=loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise YAMLFileError(f"{path}: {_problem(exc)}") from None
    except RecursionError:
        raise YAMLFileError(f"{path}: invalid YAML: nested too deeply") from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise YAMLFileError(f"{path}: invalid YAML: a value cannot be converted ({exc})") from None
