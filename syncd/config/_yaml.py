"""Read YAML into plain data while remembering the line of every key.

A problem found later (by validation, by a cross-file check) is reported at
the line of the key it concerns, so the walk records one line per key path:
the line of a mapping key, or of a sequence item.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from syncd.errors import Problem

KeyPath = tuple[str | int, ...]

_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MERGE_TAG = "tag:yaml.org,2002:merge"


def format_path(path: KeyPath) -> str:
    """Write a key path the way a human reads it: ``users[0].rules[1].project``."""
    text = ""
    for segment in path:
        if isinstance(segment, int):
            text += f"[{segment}]"
        else:
            text += f".{segment}" if text else segment
    return text


@dataclass
class Document:
    """One YAML file: its data, the line of each key path, problems found so far."""

    file: str
    data: Any = None
    lines: dict[KeyPath, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    reported: set[KeyPath] = field(default_factory=set)

    def line(self, path: KeyPath) -> int | None:
        """The line of ``path``, or of its nearest ancestor that is in the file."""
        for end in range(len(path), -1, -1):
            found = self.lines.get(path[:end])
            if found is not None:
                return found
        return None

    def report(self, path: KeyPath, message: str) -> None:
        """Record a problem at ``path``; later problems under it are redundant."""
        self.problems.append(
            Problem(self.file, self.line(path), format_path(path), message)
        )
        self.reported.add(path)

    def already_reported(self, path: KeyPath) -> bool:
        """Whether ``path`` or one of its ancestors already has a problem."""
        return any(path[:end] in self.reported for end in range(len(path) + 1))


def read_document(path: Path, file: str) -> Document:
    """Parse ``path``; syntax errors become problems, never exceptions."""
    doc = Document(file)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        doc.report((), f"cannot read the file: {exc}")
        return doc

    try:
        doc.data = _parse(text, doc)
    except yaml.YAMLError as exc:
        doc.problems.append(_syntax_problem(file, exc))
        doc.reported.add(())
    return doc


def _parse(text: str, doc: Document) -> Any:
    """Compose the node tree and walk it into plain data."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        doc.lines[()] = node.start_mark.line + 1
        return _Walker(loader, doc).walk(node, ())
    finally:
        loader.dispose()


def _syntax_problem(file: str, exc: yaml.YAMLError) -> Problem:
    """Describe a YAML syntax error at its line."""
    mark = getattr(exc, "problem_mark", None)
    line = None if mark is None else mark.line + 1
    what = getattr(exc, "problem", None) or str(exc)
    return Problem(file, line, "", f"YAML syntax error: {what}; fix the syntax")


class _Walker:
    """Turn composed nodes into dicts, lists and scalars, noting key lines."""

    def __init__(self, loader: yaml.SafeLoader, doc: Document) -> None:
        self.loader = loader
        self.doc = doc

    def walk(self, node: yaml.Node, path: KeyPath) -> Any:
        """Convert ``node`` found at ``path``."""
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return self._sequence(node, path)
        return self.loader.construct_object(node, deep=True)

    def _sequence(self, node: yaml.SequenceNode, path: KeyPath) -> list[Any]:
        """Convert a sequence, one line per item."""
        items = []
        for index, item in enumerate(node.value):
            self.doc.lines[(*path, index)] = item.start_mark.line + 1
            items.append(self.walk(item, (*path, index)))
        return items

    def _mapping(self, node: yaml.MappingNode, path: KeyPath) -> dict[str, Any]:
        """Convert a mapping; duplicate and non-text keys are problems."""
        explicit = [k for k, _ in node.value if k.tag != _MERGE_TAG]
        self._check_duplicates(explicit, path)
        self.loader.flatten_mapping(node)

        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = self.loader.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                self._report_at(key_node, path, f"key {key!r} must be text")
                continue
            self.doc.lines[(*path, key)] = key_node.start_mark.line + 1
            result[key] = self.walk(value_node, (*path, key))
        return result

    def _check_duplicates(self, keys: list[yaml.Node], path: KeyPath) -> None:
        """Report a key written twice in one mapping (YAML would keep the last)."""
        seen: set[object] = set()
        for key_node in keys:
            value = getattr(key_node, "value", None)
            if not isinstance(value, str):
                continue
            if value in seen:
                self._report_at(
                    key_node,
                    (*path, value),
                    f"key {value!r} appears twice here; keep only one",
                )
            seen.add(value)

    def _report_at(self, node: yaml.Node, path: KeyPath, message: str) -> None:
        """Report a problem at the node's own line."""
        self.doc.problems.append(
            Problem(self.doc.file, node.start_mark.line + 1, format_path(path), message)
        )
