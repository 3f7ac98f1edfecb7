"""``${VAR}`` expansion and secrets read from the environment or credential files.

Every text value may reference the environment:

- ``${VAR}``: the variable's value; unset is a problem naming it.
- ``${VAR:-default}``: the default when VAR is unset or empty.
- ``${file:NAME}``: the content of ``$CREDENTIALS_DIRECTORY/NAME``.
- ``$${``: a literal ``${``.

Secret keys (see ``SECRET_KEYS``) take exactly one reference and nothing else,
never a literal value.  When the key is absent or empty, or its variable is
unset, ``$CREDENTIALS_DIRECTORY/<credential name>`` is read instead: the dotted
key (``graph.client_secret``, ``inloox.api_key``, ``inloox.token``) and for a
user's own credentials the mailbox in front
(``alice@contoso.example.inloox.api_key``): the mailbox as written first, then
lower-cased, the canonical name that messages give.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from syncd.config._yaml import Document, KeyPath
from syncd.redact import register_secret

CREDENTIALS_ENV = "CREDENTIALS_DIRECTORY"
SECRET_KEYS: tuple[KeyPath, ...] = (
    ("graph", "client_secret"),
    ("inloox", "api_key"),
    ("inloox", "token"),
)
USER_SECRET_KEYS: tuple[KeyPath, ...] = (("inloox", "api_key"), ("inloox", "token"))

_TOKEN = re.compile(r"\$\$\{|\$\{([^}]*)\}|\$\{")
_WHOLE_REFERENCE = re.compile(r"\s*\$\{([^}]*)\}\s*")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_FILE_NAME = re.compile(r"[A-Za-z0-9_.@+-]+")
# Never used: stands for a secret whose problem is already reported.
UNRESOLVED = SecretStr("")


class ExpansionError(ValueError):
    """A reference cannot be resolved; the message says what to set."""


@dataclass(frozen=True)
class Environment:
    """Where references are resolved: variables and the credentials directory."""

    env: Mapping[str, str]

    @property
    def credentials_dir(self) -> Path | None:
        """``$CREDENTIALS_DIRECTORY``, if set."""
        value = self.env.get(CREDENTIALS_ENV)
        return Path(value) if value else None

    def credential(self, name: str) -> str | None:
        """Read credential file ``name``, or None when there is none."""
        directory = self.credentials_dir
        if directory is None or not (directory / name).is_file():
            return None
        return self._read(directory / name)

    def first_credential(self, names: tuple[str, ...]) -> str | None:
        """Read the first credential file of ``names`` that exists."""
        for name in names:
            value = self.credential(name)
            if value is not None:
                return value
        return None

    def required_credential(self, name: str) -> str:
        """Read credential file ``name``; its absence is an error."""
        if not _FILE_NAME.fullmatch(name):
            raise ExpansionError(f"${{file:{name}}}: not a plain file name")
        if self.credentials_dir is None:
            raise ExpansionError(
                f"${{file:{name}}} needs ${CREDENTIALS_ENV}; set it or use ${{VAR}}"
            )
        value = self.credential(name)
        if value is None:
            raise ExpansionError(
                f"${{file:{name}}}: create {self.credentials_dir / name}"
            )
        return value

    @staticmethod
    def _read(path: Path) -> str:
        """Read one credential file, dropping the trailing newline.

        Its content is a secret wherever it is used, even where it does not
        belong (an error message quoting a misplaced value masks it).
        """
        try:
            value = path.read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise ExpansionError(f"cannot read credential file {path}: {exc}") from exc
        register_secret(value)
        return value


_SECRET_VARIABLE = re.compile(
    r"SECRET|PASSW|API_?KEY|TOKEN(?!_?(CACHE|PATH|FILE|DIR))", re.I)
"""Variables whose values are masked in logs and messages wherever used."""


def expand(text: str, environment: Environment) -> str:
    """Replace every reference in ``text``; raise ExpansionError if one fails."""

    def replace(match: re.Match[str]) -> str:
        token = match.group(0)
        if token == "$${":
            return "${"
        if match.group(1) is None:
            raise ExpansionError("unclosed '${': write ${VAR} or $${ for a literal")
        return _resolve(match.group(1), environment)

    return _TOKEN.sub(replace, text)


def _resolve(body: str, environment: Environment) -> str:
    """Resolve the inside of one ``${...}``."""
    if body.startswith("file:"):
        return environment.required_credential(body.removeprefix("file:"))

    name, has_default, default = body.partition(":-")
    _check_name(name)
    value = environment.env.get(name)
    if value:
        if _SECRET_VARIABLE.search(name):
            register_secret(value)
        return value
    if has_default:
        return default
    if value is not None:
        return value
    raise ExpansionError(
        f"environment variable {name} is not set; set it or write ${{{name}:-default}}"
    )


def _check_name(name: str) -> None:
    """Refuse a variable name the shell could not have exported."""
    if not _NAME.fullmatch(name):
        raise ExpansionError(
            f"'${{{name}}}' is not a valid reference: write ${{VAR}}, "
            "${VAR:-default} or ${file:NAME}"
        )


def expand_tree(
    doc: Document, node: Any, path: KeyPath, environment: Environment
) -> Any:
    """Expand references in every text value below ``node``; report failures."""
    if isinstance(node, dict):
        return {
            k: expand_tree(doc, v, (*path, k), environment) for k, v in node.items()
        }
    if isinstance(node, list):
        return [
            expand_tree(doc, v, (*path, i), environment) for i, v in enumerate(node)
        ]
    if not isinstance(node, str):
        return node
    try:
        return expand(node, environment)
    except ExpansionError as exc:
        doc.report(path, str(exc))
        return node


def resolve_secrets(
    doc: Document,
    data: dict[str, Any],
    base: KeyPath,
    keys: tuple[KeyPath, ...],
    prefixes: tuple[str, ...],
    environment: Environment,
) -> None:
    """Replace each secret key of ``data`` by a SecretStr (or None) in place.

    The credential file of a key is looked up under each prefix in turn; the
    last prefix gives the canonical name that messages show.
    """
    for key in keys:
        section_name, name = key
        section = data.get(str(section_name))
        if section is None:
            section = {}
        if not isinstance(section, dict):
            continue
        dotted = ".".join(map(str, key))
        credentials = tuple(dict.fromkeys(p + dotted for p in prefixes))
        secret = _secret(
            doc, section.get(str(name)), (*base, *key), credentials, environment
        )
        if secret is not None or str(name) in section:
            section[str(name)] = secret
            data[str(section_name)] = section


def _secret(
    doc: Document,
    raw: Any,
    path: KeyPath,
    credentials: tuple[str, ...],
    environment: Environment,
) -> SecretStr | None:
    """Resolve one secret value; a literal in YAML is a problem."""
    try:
        value = _secret_text(raw, credentials, environment)
    except ExpansionError as exc:
        doc.report(path, str(exc))
        return UNRESOLVED
    return SecretStr(value) if value else None


def _secret_text(
    raw: Any, credentials: tuple[str, ...], environment: Environment
) -> str | None:
    """The secret's text from its reference, or from the credential file."""
    credential = credentials[-1]
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return environment.first_credential(credentials)

    match = _WHOLE_REFERENCE.fullmatch(raw) if isinstance(raw, str) else None
    if match is None:
        raise ExpansionError(
            "secrets never live in YAML: write ${VAR} and set VAR in the "
            f"environment, or put it in ${CREDENTIALS_ENV}/{credential}"
        )
    return _secret_reference(match.group(1), credentials, environment)


def _secret_reference(
    body: str, credentials: tuple[str, ...], environment: Environment
) -> str | None:
    """Resolve ``${VAR}`` / ``${VAR:-}`` / ``${file:NAME}`` for a secret."""
    if body.startswith("file:"):
        return environment.required_credential(body.removeprefix("file:"))

    name, has_default, default = body.partition(":-")
    _check_name(name)
    if default:
        raise ExpansionError(
            f"secrets never live in YAML: the default of ${{{name}:-...}} must be "
            "empty; set the variable instead"
        )
    value = environment.env.get(name) or environment.first_credential(credentials)
    register_secret(value)
    if value or has_default:
        return value
    raise ExpansionError(
        f"environment variable {name} is not set; set it or create "
        f"${CREDENTIALS_ENV}/{credentials[-1]}"
    )
