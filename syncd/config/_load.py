"""Load syncd.yaml and users.d, collecting every problem before failing.

A problem in syncd.yaml itself is fatal.  A problem in one user (a users.d
file or an entry of the inline ``users:`` list) only leaves that user out:
``load_config_lenient`` returns the others, ``load_config`` refuses them all.
"""

from __future__ import annotations

import difflib
import os
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from syncd.config._durations import format_duration
from syncd.config._interpolate import (
    SECRET_KEYS,
    USER_SECRET_KEYS,
    Environment,
    ExpansionError,
    expand,
    expand_tree,
    resolve_secrets,
)
from syncd.config._models import Config, UserConfig
from syncd.config._yaml import Document, KeyPath, read_document
from syncd.errors import ConfigError, Problem

USER_FILE_SUFFIXES = (".yaml", ".yml")
_SECRET_NAMES = {"client_secret", "api_key", "token", "inloox", "url"}
_LOADER_KEYS = {"source", "source_file"}
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class LoadResult:
    """What loading found: the usable config and every problem.

    ``config`` is None when syncd.yaml itself is wrong; otherwise it holds the
    users without problems, and ``rejected`` names the users left out.
    """

    config: Config | None
    problems: tuple[Problem, ...]
    rejected: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """Whether nothing at all is wrong."""
        return self.config is not None and not self.problems


def load_config(path: Path, *, env: Mapping[str, str] | None = None) -> Config:
    """Load the whole configuration; ConfigError lists every problem found."""
    result = load_config_lenient(path, env=env)
    if result.config is None or result.problems:
        raise ConfigError(list(result.problems))
    return result.config


def load_config_lenient(
    path: Path, *, env: Mapping[str, str] | None = None
) -> LoadResult:
    """Load what is usable: a bad user is left out, a bad syncd.yaml is fatal."""
    environment = Environment(os.environ if env is None else env)
    doc = read_document(path, str(path))
    data = _root_mapping(doc, "needs at least ledger, graph and inloox")
    inline = data.pop("users", None)
    global_secret = _global_secrets(doc, data, environment)
    users_dir = _users_dir(doc, data, path, environment)
    config = _global_config(doc, data, path, users_dir, environment)

    users = _Users()
    _inline_users(doc, inline, environment, users)
    docs = [doc]
    for user_file in _user_files(doc, users_dir):
        docs.append(_file_user(user_file, environment, users))
    _check_users(doc, users, global_secret, bool(inline), users_dir)

    problems = tuple(p for d in docs for p in _in_line_order(d.problems))
    if config is None or any(not p.key.startswith("users[") for p in doc.problems):
        return LoadResult(None, problems, tuple(users.rejected))
    config = config.model_copy(update={"users": users.valid()})
    return LoadResult(config, problems, tuple(users.rejected))


def format_problems(problems: Iterable[Problem]) -> str:
    """One ``file:line: key: message`` line per problem, then the count."""
    lines = [str(problem) for problem in problems]
    count = len(lines)
    noun = "problem" if count == 1 else "problems"
    lines.append(f"{count} configuration {noun} found" if count else "configuration ok")
    return "\n".join(lines)


# --- syncd.yaml ----------------------------------------------------------------


def _root_mapping(doc: Document, needs: str) -> dict[str, Any]:
    """The document's top-level mapping; anything else is a problem."""
    if doc.problems and () in doc.reported:
        return {}
    if doc.data is None:
        doc.report((), f"the file is empty: it {needs}")
        return {}
    if not isinstance(doc.data, dict):
        doc.report((), f"must be a mapping of keys; it {needs}")
        return {}
    for key in _LOADER_KEYS & doc.data.keys():
        doc.report((key,), f"unknown key {key!r}: syncd sets it itself; remove it")
        del doc.data[key]
    return dict(doc.data)


def _global_secrets(
    doc: Document, data: dict[str, Any], environment: Environment
) -> bool:
    """Resolve syncd.yaml's secrets; tell whether a default InLoox one is set."""
    resolve_secrets(doc, data, (), SECRET_KEYS, ("",), environment)
    inloox = data.get("inloox")
    if not isinstance(inloox, dict):
        return False
    return any(inloox.get(key) is not None for key in ("api_key", "token"))


def _global_config(
    doc: Document,
    data: dict[str, Any],
    path: Path,
    users_dir: Path | None,
    environment: Environment,
) -> Config | None:
    """Validate syncd.yaml without its users."""
    if () in doc.reported:
        return None
    expanded = expand_tree(doc, data, (), environment)
    expanded["users_dir"] = users_dir
    expanded["source"] = path
    return _validate(doc, Config, expanded, (), path.parent)


def _users_dir(
    doc: Document, data: dict[str, Any], path: Path, environment: Environment
) -> Path | None:
    """Resolve ``users_dir`` relative to syncd.yaml; it must be a directory."""
    raw = data.get("users_dir")
    if raw is None:
        return None
    if not isinstance(raw, str) or not raw.strip():
        doc.report(("users_dir",), "must be a directory path, like users.d")
        return None
    try:
        directory = path.parent / Path(expand(raw, environment)).expanduser()
    except ExpansionError as exc:
        doc.report(("users_dir",), str(exc))
        return None
    if directory.exists() and not directory.is_dir():
        doc.report(
            ("users_dir",),
            f"{directory} is a file, not a directory: point users_dir at the "
            "directory of user files (relative to this file), like users.d",
        )
        return None
    if not directory.is_dir():
        doc.report(
            ("users_dir",),
            f"no such directory: {directory}; create it "
            "or fix the path (relative to this file)",
        )
        return None
    return directory


# --- users -----------------------------------------------------------------------


def _user_files(doc: Document, directory: Path | None) -> list[Path]:
    """Every ``*.yaml``/``*.yml`` in users.d, sorted by name, hidden ones aside.

    A directory so named is listed too: loading it reports the mistake.
    """
    if directory is None:
        return []
    try:
        entries = sorted(directory.iterdir())
    except OSError as exc:
        doc.report(("users_dir",), f"cannot list {directory}: {exc}")
        return []
    return [
        p
        for p in entries
        if p.suffix in USER_FILE_SUFFIXES and not p.name.startswith(".")
    ]


@dataclass(frozen=True)
class _Loaded:
    """A valid user and where it was defined."""

    user: UserConfig
    doc: Document
    base: KeyPath

    @property
    def where(self) -> str:
        """``file:line`` of its mailbox key."""
        return f"{self.doc.file}:{self.doc.line((*self.base, 'mailbox'))}"

    @property
    def name(self) -> str:
        """The file, plus ``users[i]`` for an inline user."""
        if not self.base:
            return self.doc.file
        return f"{self.doc.file} {self.base[0]}[{self.base[1]}]"


class _Users:
    """Users kept and users left out, in the order they were defined."""

    def __init__(self) -> None:
        self.loaded: list[_Loaded] = []
        self.rejected: list[str] = []

    def valid(self) -> tuple[UserConfig, ...]:
        """The users kept."""
        return tuple(entry.user for entry in self.loaded)

    def reject(self, entry: _Loaded, message: str, key: str) -> None:
        """Leave out a loaded user because of a cross-user problem."""
        entry.doc.report((*entry.base, key), message)
        self.loaded.remove(entry)
        self.rejected.append(entry.name)


def _inline_users(
    doc: Document, inline: Any, environment: Environment, users: _Users
) -> None:
    """Validate each entry of ``users:`` on its own."""
    if inline is None:
        return
    if not isinstance(inline, list):
        doc.report(("users",), "must be a list of users (each like a users.d file)")
        return
    for index, raw in enumerate(inline):
        user = _user(doc, raw, ("users", index), environment)
        if user is None:
            users.rejected.append(f"{doc.file} users[{index}]")
        else:
            users.loaded.append(_Loaded(user, doc, ("users", index)))


def _file_user(path: Path, environment: Environment, users: _Users) -> Document:
    """Load one users.d file."""
    if path.is_dir():
        doc = Document(str(path))
        doc.report(
            (),
            "is a directory, not a user file: move the user files out of it "
            "or rename it so that its name does not end in .yaml or .yml",
        )
        users.rejected.append(doc.file)
        return doc
    doc = read_document(path, str(path))
    raw = _root_mapping(doc, "needs at least mailbox and timezone")
    user = None if () in doc.reported else _user(doc, raw, (), environment)
    if user is None:
        users.rejected.append(doc.file)
    else:
        users.loaded.append(_Loaded(user, doc, ()))
    return doc


def _user(
    doc: Document, raw: Any, base: KeyPath, environment: Environment
) -> UserConfig | None:
    """Validate one user; None when anything about it is wrong."""
    before = len(doc.problems)
    if not isinstance(raw, dict):
        doc.report(base, "must be a mapping with mailbox, timezone, rules, ...")
        return None
    raw = dict(raw)
    for key in _LOADER_KEYS & raw.keys():
        doc.report((*base, key), f"unknown key {key!r}: syncd sets it itself")
        del raw[key]

    mailbox = raw.get("mailbox")
    resolve_secrets(doc, raw, base, USER_SECRET_KEYS, _prefixes(mailbox), environment)
    expanded = expand_tree(doc, raw, base, environment)
    expanded["source_file"] = Path(doc.file)
    user = _validate(doc, UserConfig, expanded, base, Path(doc.file).parent)
    if _has_problems(doc, base, before):
        return None
    return user


def _prefixes(mailbox: Any) -> tuple[str, ...]:
    """Credential file prefixes of a user: the mailbox as written, then lower-case.

    Mailboxes compare case-insensitively, so the lower-case name is canonical.
    """
    if not isinstance(mailbox, str):
        return ("-.",)
    written = f"{mailbox.strip()}."
    return (written, written.lower())


def _has_problems(doc: Document, base: KeyPath, before: int) -> bool:
    """Whether the user at ``base`` has a problem (also from parsing)."""
    if len(doc.problems) > before:
        return True
    if not base:
        return bool(doc.problems)
    prefix = f"users[{base[1]}]"
    return any(
        p.key == prefix or p.key.startswith((prefix + ".", prefix + "["))
        for p in doc.problems
    )


def _check_users(
    doc: Document,
    users: _Users,
    global_secret: bool,
    any_inline: bool,
    users_dir: Path | None,
) -> None:
    """Checks across users: duplicates, InLoox credentials, none at all."""
    seen: dict[str, str] = {}
    for entry in list(users.loaded):
        first = seen.setdefault(entry.user.mailbox.lower(), entry.where)
        if first != entry.where:
            users.reject(
                entry,
                f"mailbox {entry.user.mailbox} is already "
                f"configured at {first}; remove one of them",
                "mailbox",
            )

    for entry in list(users.loaded):
        own = entry.user.inloox
        if not global_secret and (own is None or not own.given):
            users.reject(
                entry,
                "no InLoox credential for this user: set "
                "inloox.api_key (or inloox.token) here or in syncd.yaml",
                "inloox",
            )

    if ("users_dir",) in doc.reported or () in doc.reported:
        return
    if not users.loaded and not users.rejected and not any_inline:
        where = f"{users_dir} has no *.yaml file" if users_dir else "users: is empty"
        doc.report(
            ("users",),
            f"no users configured ({where}): add a user file "
            "to users_dir or an entry to users:",
        )


# --- validation errors -------------------------------------------------------------


def _validate(
    doc: Document, model: type[M], data: dict[str, Any], base: KeyPath, base_dir: Path
) -> M | None:
    """Validate ``data``; each error becomes a problem at its key's line."""
    try:
        return model.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            path = (*base, *_clean_loc(error["loc"]))
            if not doc.already_reported(path):
                doc.report(path, _message(error, model, _clean_loc(error["loc"])))
        return None


def _clean_loc(loc: tuple[str | int, ...]) -> KeyPath:
    """Drop pydantic's validator tags from an error location."""
    return tuple(s for s in loc if isinstance(s, int) or "[" not in s)


def _message(error: ErrorDetails, model: type[BaseModel], loc: KeyPath) -> str:
    """Say what to change, in the words of the config file."""
    kind, ctx = error["type"], error.get("ctx", {})
    key = loc[-1] if loc else ""
    shown = "" if key in _SECRET_NAMES else f" (got {_short(error['input'])})"
    if kind == "extra_forbidden":
        return _unknown_key(str(key), _allowed_keys(model, loc[:-1]))
    if kind == "missing":
        return f"required key {key!r} is missing; add it"
    if kind in ("value_error", "assertion_error"):
        return str(ctx.get("error", error["msg"]))
    simple = {
        "literal_error": f"must be {ctx.get('expected')}",
        "string_type": "must be text; quote it",
        "string_too_short": "must not be empty",
        "bool_parsing": "must be true or false",
        "bool_type": "must be true or false",
        "int_parsing": "must be a whole number",
        "int_type": "must be a whole number",
        "int_from_float": "must be a whole number",
        "greater_than_equal": f"must be at least {_short(ctx.get('ge'))}",
        "less_than_equal": f"must be at most {_short(ctx.get('le'))}",
        "tuple_type": "must be a list, like [a, b]",
        "model_type": "must be a mapping of keys",
        "model_attributes_type": "must be a mapping of keys",
        "dict_type": "must be a mapping of keys",
    }
    return simple.get(kind, error["msg"]) + shown


def _short(value: Any) -> str:
    """A value for a message, shortened; durations in config notation."""
    text = format_duration(value) if isinstance(value, timedelta) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _unknown_key(key: str, allowed: list[str]) -> str:
    """Name the unknown key, the likely intended one, and what is allowed."""
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    listed = ", ".join(allowed) if allowed else "none"
    return f"unknown key {key!r}: {hint}remove or rename it (allowed here: {listed})"


def _allowed_keys(model: type[BaseModel], loc: KeyPath) -> list[str]:
    """The keys a config file may write at ``loc`` inside ``model``."""
    current: Any = model
    for segment in loc:
        if isinstance(segment, int):
            continue
        field = current.model_fields.get(segment)
        current = None if field is None else _inner_model(field.annotation)
        if current is None:
            return []
    return [name for name in current.model_fields if name not in _LOADER_KEYS]


def _inner_model(annotation: Any) -> type[BaseModel] | None:
    """The model inside ``X | None``, ``tuple[X, ...]`` or ``Annotated[X, ...]``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, tuple, typing.Annotated):
        for arg in typing.get_args(annotation):
            found = _inner_model(arg)
            if found is not None:
                return found
    return None


def _in_line_order(problems: list[Problem]) -> list[Problem]:
    """Problems of one file sorted by line, unknown lines last."""
    return sorted(problems, key=lambda p: (p.line is None, p.line or 0))
