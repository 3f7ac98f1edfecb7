"""The configuration as frozen, validated models, with every default named."""

from __future__ import annotations

import re
import zoneinfo
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from syncd.config._durations import format_duration, parse_duration
from syncd.config._ledger_url import check_ledger_url
from syncd.errors import SyncdError
from syncd.model import BOOKED_CATEGORY

# syncd.yaml
DEFAULT_GRAPH_BASE_URL = "https://graph.microsoft.com/v1.0"
DEFAULT_GRAPH_AUTH: Literal["client_credentials"] = "client_credentials"
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
DEFAULT_INTERVAL = timedelta(minutes=5)
DEFAULT_JITTER = timedelta(seconds=30)
DEFAULT_MAX_PARALLEL_PASSES = 16  # quiet passes at Graph's latency, 10,000 users
DEFAULT_HTTP_TIMEOUT = timedelta(seconds=30)
DEFAULT_CONNECT_TIMEOUT = timedelta(seconds=10)
DEFAULT_MAX_CONCURRENCY = 64
DEFAULT_GRAPH_CONCURRENCY = 4
GRAPH_MAILBOX_CONCURRENCY_LIMIT = 4  # Graph's own limit per app and mailbox
DEFAULT_INLOOX_CONCURRENCY = 16
DEFAULT_RETRY_ATTEMPTS = 5
DEFAULT_RETRY_BASE_DELAY = timedelta(seconds=1)
DEFAULT_RETRY_MAX_DELAY = timedelta(minutes=5)
DEFAULT_PASS_TIMEOUT = timedelta(minutes=10)
DEFAULT_LOG_FORMAT: Literal["auto"] = "auto"
DEFAULT_LOG_LEVEL = "info"
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")

# a user
DEFAULT_LOOKBACK = timedelta(days=14)
DEFAULT_HORIZON = timedelta(days=1)
DEFAULT_TAG_EVENT = True
DEFAULT_BOOK_BEFORE_END = False
DEFAULT_MAX_DURATION = timedelta(hours=12)
DEFAULT_BACKDATING_LIMIT = timedelta(days=30)
DEFAULT_ON_CHANGE: Literal["update"] = "update"
DEFAULT_ON_CANCEL: Literal["retract"] = "retract"
DEFAULT_FREEZE_AFTER = timedelta(days=7)

_GUID = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
_MAILBOX = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+")
_DOMAIN = re.compile(r"[^@\s]+\.[^@\s.]+")
_URL = re.compile(r"https?://[^\s/]+\S*")
_LISTEN = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[^\s:\[\]]+):(?P<port>\d{1,5})")


def is_guid(value: str) -> bool:
    """Whether ``value`` is a GUID like ``6f1c0c52-7d6b-4f0e-9a43-2b1f3a2f9e10``."""
    return _GUID.fullmatch(value.strip()) is not None


class UnknownUserError(SyncdError, LookupError):
    """The mailbox asked for is not configured."""


# --- value types -------------------------------------------------------------


def _to_duration(value: Any) -> Any:
    """Parse a duration written as text; timedeltas pass through."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"must be a duration like 30s, 5m or 1h30m (got {value!r})")
    return parse_duration(str(value))


def _positive(value: timedelta) -> timedelta:
    """Refuse zero and negative durations."""
    if value <= timedelta(0):
        raise ValueError(f"must be longer than 0s (got {format_duration(value)})")
    return value


def _compile(value: Any) -> Any:
    """Compile a regular expression, explaining a mistake in it."""
    if isinstance(value, re.Pattern):
        return value
    if not isinstance(value, str):
        raise ValueError(f"must be a regular expression as text (got {value!r})")
    try:
        return re.compile(value)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {value!r}: {exc}") from exc


def _url(value: str) -> str:
    """Require an http(s) URL without a leftover ``<placeholder>``."""
    _no_placeholder(value)
    if not _URL.fullmatch(value):
        raise ValueError(f"must be an http:// or https:// URL (got {value!r})")
    return value.rstrip("/")


def _no_placeholder(value: str) -> str:
    """Refuse the ``<tenant-id>`` style placeholders of the example files."""
    if re.search(r"<[^<>]*>", value):
        raise ValueError(f"replace the placeholder in {value!r} with the real value")
    return value


def _lowercase(value: str) -> str:
    """Addresses and domains compare case-insensitively: store them lower-case."""
    return value.lower()


Duration = Annotated[timedelta, BeforeValidator(_to_duration)]
PositiveDuration = Annotated[Duration, AfterValidator(_positive)]
Regex = Annotated[re.Pattern[str], BeforeValidator(_compile)]
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
Url = Annotated[Text, AfterValidator(_url)]
Names = tuple[Text, ...]


def _no_booked_category(value: tuple[str, ...] | None) -> tuple[str, ...] | None:
    """The category InLoox tags booked events with selects nothing."""
    if value and any(v.casefold() == BOOKED_CATEGORY.casefold() for v in value):
        raise ValueError(
            f"{BOOKED_CATEGORY!r} is the category InLoox gives events it has "
            "booked; syncd skips such events (booked elsewhere), so it can "
            "never select or map one: remove it"
        )
    return value


Categories = Annotated[Names, AfterValidator(_no_booked_category)]


class _Model(BaseModel):
    """Frozen, and every key not declared here is an error."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def _resolve_path(value: Path | None, info: ValidationInfo) -> Path | None:
    """Make a relative path relative to the directory of the config file."""
    if value is None:
        return None
    value = value.expanduser()
    base = (info.context or {}).get("base_dir")
    if base is None or value.is_absolute():
        return value
    return Path(base) / value


# --- syncd.yaml ----------------------------------------------------------------


class LedgerConfig(_Model):
    """Where the ledger lives: a SQLite file or PostgreSQL through psycopg 3.

    A relative SQLite path is made absolute against the config file's
    directory, and ``postgresql://`` becomes ``postgresql+psycopg://``.
    """

    url: Text

    @field_validator("url")
    @classmethod
    def _sqlalchemy_url(cls, value: str, info: ValidationInfo) -> str:
        base = (info.context or {}).get("base_dir")
        return check_ledger_url(value, None if base is None else Path(base))


class ScheduleConfig(_Model):
    """How often each user's pass runs."""

    interval: PositiveDuration = DEFAULT_INTERVAL
    jitter: Duration = Field(default=DEFAULT_JITTER, ge=timedelta(0))
    max_parallel_passes: int = Field(default=DEFAULT_MAX_PARALLEL_PASSES, ge=1)


class TlsConfig(_Model):
    """Extra trust for all outbound HTTPS."""

    ca_bundle: Path | None = None

    @field_validator("ca_bundle")
    @classmethod
    def _existing_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        path = _resolve_path(value, info)
        if path is not None and not path.is_file():
            raise ValueError(f"no such file: {path}; give the path of a PEM bundle")
        return path


class GraphConfig(_Model):
    """Microsoft Graph and the identity platform."""

    base_url: Url = DEFAULT_GRAPH_BASE_URL
    authority: Url
    client_id: Annotated[Text, AfterValidator(_no_placeholder)]
    auth: Literal["client_credentials", "device_code"] = DEFAULT_GRAPH_AUTH
    client_secret: SecretStr | None = None
    token_cache: Path | None = None
    page_size: int = Field(default=DEFAULT_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE)

    @field_validator("authority")
    @classmethod
    def _https_authority(cls, value: str) -> str:
        if not value.startswith("https://"):
            raise ValueError(
                "must start with https:// (msal refuses anything else), like "
                "https://login.microsoftonline.com/<tenant-id>"
            )
        return value

    @field_validator("token_cache")
    @classmethod
    def _relative_to_config(
        cls, value: Path | None, info: ValidationInfo
    ) -> Path | None:
        return _resolve_path(value, info)

    @model_validator(mode="after")
    def _secret_for_app_only(self) -> GraphConfig:
        if self.auth == "client_credentials" and self.client_secret is None:
            raise ValueError(
                "auth: client_credentials needs client_secret: write "
                "client_secret: ${SYNCD_GRAPH_CLIENT_SECRET} or create "
                "$CREDENTIALS_DIRECTORY/graph.client_secret"
            )
        return self


class InlooxCredentials(_Model):
    """An InLoox access token: ``api_key`` (x-api-key) or ``token`` (Bearer)."""

    api_key: SecretStr | None = None
    token: SecretStr | None = None

    @model_validator(mode="after")
    def _at_most_one(self) -> InlooxCredentials:
        if self.api_key is not None and self.token is not None:
            raise ValueError("give api_key or token, not both; remove one")
        return self

    @property
    def given(self) -> bool:
        """Whether a credential is set."""
        return self.api_key is not None or self.token is not None


class InlooxConfig(InlooxCredentials):
    """The InLoox OData service and its default credential."""

    base_url: Url


class HttpConfig(_Model):
    """Timeouts and concurrency limits of every outbound call."""

    timeout: PositiveDuration = DEFAULT_HTTP_TIMEOUT
    connect_timeout: PositiveDuration = DEFAULT_CONNECT_TIMEOUT
    max_concurrency: int = Field(default=DEFAULT_MAX_CONCURRENCY, ge=1)
    graph_concurrency: int = Field(
        default=DEFAULT_GRAPH_CONCURRENCY, ge=1, le=GRAPH_MAILBOX_CONCURRENCY_LIMIT
    )
    inloox_concurrency: int = Field(default=DEFAULT_INLOOX_CONCURRENCY, ge=1)


class RetryConfig(_Model):
    """Backoff of transient failures."""

    max_attempts: int = Field(default=DEFAULT_RETRY_ATTEMPTS, ge=1)
    base_delay: PositiveDuration = DEFAULT_RETRY_BASE_DELAY
    max_delay: PositiveDuration = DEFAULT_RETRY_MAX_DELAY

    @model_validator(mode="after")
    def _ordered(self) -> RetryConfig:
        if self.max_delay < self.base_delay:
            raise ValueError(
                f"max_delay ({format_duration(self.max_delay)}) is shorter than "
                f"base_delay ({format_duration(self.base_delay)}); raise max_delay"
            )
        return self


class MetricsConfig(_Model):
    """Prometheus metrics and health endpoints, off unless ``listen`` is set."""

    listen: Text | None = None

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        match = None if value is None else _LISTEN.fullmatch(value)
        if value is not None and (match is None or int(match["port"]) > 65535):
            raise ValueError(
                f"must be host:port like 127.0.0.1:9464 or [::1]:9464 (got {value!r})"
            )
        return value


class LogConfig(_Model):
    """Log rendering: JSON lines, console, or chosen by whether stderr is a TTY."""

    format: Literal["auto", "json", "console"] = DEFAULT_LOG_FORMAT
    level: Text = DEFAULT_LOG_LEVEL

    @field_validator("level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        if value.lower() not in LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(LOG_LEVELS)} (got {value!r})")
        return value.lower()


# --- a user --------------------------------------------------------------------


class SkipPolicy(_Model):
    """Which kinds of events are never booked."""

    all_day: bool = True
    declined: bool = True
    tentative: bool = False
    free: bool = True
    private: bool = False
    cancelled: bool = True


class SelectPolicy(_Model):
    """Trigger categories: an event with any of them is a candidate."""

    categories: Categories = ()


class RuleMatch(_Model):
    """Conditions of a rule; every condition given must hold."""

    categories: Categories | None = None
    all_categories: Categories | None = None
    subject: Regex | None = None
    organizer: Annotated[Text, AfterValidator(_lowercase)] | None = None
    attendee_domain: Annotated[Text, AfterValidator(_lowercase)] | None = None
    location: Regex | None = None

    @field_validator("categories", "all_categories")
    @classmethod
    def _not_empty(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value == ():
            raise ValueError(
                "an empty list never matches; list categories or remove it"
            )
        return value

    @field_validator("organizer")
    @classmethod
    def _address_or_domain(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if value.startswith("@") and _DOMAIN.fullmatch(value[1:]):
            return value
        if _MAILBOX.fullmatch(value):
            return value
        raise ValueError(
            f"must be an address (bob@contoso.example) or a domain with @ "
            f"(@contoso.example), got {value!r}"
        )

    @field_validator("attendee_domain")
    @classmethod
    def _domain(cls, value: str | None) -> str | None:
        if value is None:
            return None
        domain = value.removeprefix("@")
        if not _DOMAIN.fullmatch(domain):
            raise ValueError(f"must be a domain like contoso.example (got {value!r})")
        return domain

    @model_validator(mode="after")
    def _some_condition(self) -> RuleMatch:
        if all(getattr(self, name) is None for name in type(self).model_fields):
            conditions = ", ".join(type(self).model_fields)
            raise ValueError(f"give at least one condition: {conditions}")
        return self


class Rule(_Model):
    """Book events that match on a project (GUID or name) and optional task."""

    match: RuleMatch
    project: Text
    task: Text | None = None
    name: Text | None = None


class UserConfig(_Model):
    """One mailbox: its window, rules and policies."""

    mailbox: Text
    timezone: Text
    lookback: PositiveDuration = DEFAULT_LOOKBACK
    horizon: Duration = Field(default=DEFAULT_HORIZON, ge=timedelta(0))
    inloox: InlooxCredentials | None = None
    select: SelectPolicy = SelectPolicy()
    rules: tuple[Rule, ...] = ()
    default_project: Text | None = None
    skip: SkipPolicy = SkipPolicy()
    tag_event: bool = DEFAULT_TAG_EVENT
    book_before_end: bool = DEFAULT_BOOK_BEFORE_END
    max_duration: PositiveDuration = DEFAULT_MAX_DURATION
    backdating_limit: PositiveDuration = DEFAULT_BACKDATING_LIMIT
    on_change: Literal["update", "ignore"] = DEFAULT_ON_CHANGE
    on_cancel: Literal["retract", "keep"] = DEFAULT_ON_CANCEL
    freeze_after: PositiveDuration = DEFAULT_FREEZE_AFTER
    source_file: Path | None = None

    @field_validator("mailbox")
    @classmethod
    def _mailbox(cls, value: str) -> str:
        if not _MAILBOX.fullmatch(value):
            raise ValueError(
                f"must be an e-mail address like alice@contoso.example (got {value!r})"
            )
        # Exchange addresses ignore letter case; the ledger keys users by
        # mailbox, so one spelling keeps a user's bookings whatever is written.
        return value.lower()

    @field_validator("timezone")
    @classmethod
    def _iana_zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r}: use an IANA name like Europe/Berlin "
                "or America/New_York (not a Windows name)"
            ) from None
        return value

    @field_validator("rules")
    @classmethod
    def _named(cls, rules: tuple[Rule, ...]) -> tuple[Rule, ...]:
        return tuple(
            rule if rule.name else rule.model_copy(update={"name": f"rules[{i}]"})
            for i, rule in enumerate(rules)
        )


class Config(_Model):
    """The whole configuration: global settings and every user."""

    ledger: LedgerConfig
    schedule: ScheduleConfig = ScheduleConfig()
    tls: TlsConfig = TlsConfig()
    graph: GraphConfig
    inloox: InlooxConfig
    http: HttpConfig = HttpConfig()
    retry: RetryConfig = RetryConfig()
    pass_timeout: PositiveDuration = DEFAULT_PASS_TIMEOUT
    metrics: MetricsConfig = MetricsConfig()
    log: LogConfig = LogConfig()
    users_dir: Path | None = None
    users: tuple[UserConfig, ...] = ()
    source: Path

    def user(self, mailbox: str) -> UserConfig:
        """The user with this mailbox (any letter case); a clear error if none."""
        user = self._by_mailbox().get(mailbox.strip().lower())
        if user is not None:
            return user
        known = ", ".join(u.mailbox for u in self.users) or "none"
        raise UnknownUserError(
            f"no user {mailbox!r} in {self.source} (configured: {known})"
        )

    def _by_mailbox(self) -> dict[str, UserConfig]:
        """Users by lower-case mailbox (the first one wins), built once.

        Kept with the ``users`` tuple it was built from: a ``model_copy`` that
        replaces the users builds its own.
        """
        built = self.__dict__.get("_users_index")
        if built is not None and built[0] is self.users:
            return built[1]  # type: ignore[no-any-return]
        index: dict[str, UserConfig] = {}
        for user in self.users:
            index.setdefault(user.mailbox.lower(), user)
        object.__setattr__(self, "_users_index", (self.users, index))
        return index

    def inloox_credentials(self, user: UserConfig) -> InlooxCredentials:
        """The user's own InLoox credential, or else the global one."""
        if user.inloox is not None and user.inloox.given:
            return user.inloox
        return InlooxCredentials(api_key=self.inloox.api_key, token=self.inloox.token)
