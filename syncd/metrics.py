"""Prometheus metrics: one registry, names shared by code, docs and dashboards."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

REGISTRY = CollectorRegistry(auto_describe=True)

BUILD_INFO = Info("syncd_build", "Version of the running syncd.", registry=REGISTRY)

EVENTS = Counter(
    "syncd_events_total",
    "Events decided by passes, by outcome (booked, updated, retracted, skipped, "
    "failed, unchanged) and reason.",
    ["outcome", "reason"],
    registry=REGISTRY,
)
GRAPH_REQUESTS = Counter(
    "syncd_graph_requests_total",
    "HTTP requests sent to Microsoft Graph and the identity platform, by status.",
    ["status"],
    registry=REGISTRY,
)
INLOOX_REQUESTS = Counter(
    "syncd_inloox_requests_total",
    "HTTP requests sent to InLoox, by operation and status.",
    ["operation", "status"],
    registry=REGISTRY,
)
THROTTLES = Counter(
    "syncd_throttled_total",
    "Responses that asked syncd to slow down (429, 503 with Retry-After).",
    ["service"],
    registry=REGISTRY,
)
PASS_DURATION = Histogram(
    "syncd_pass_duration_seconds",
    "Wall time of one user's pass.",
    ["result"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
    registry=REGISTRY,
)
LAST_SUCCESS = Gauge(
    "syncd_last_success_timestamp_seconds",
    "Unix time of the last successful pass, per user.",
    ["user"],
    registry=REGISTRY,
)
USERS = Gauge(
    "syncd_users",
    "Configured users, by state (active, auth_required, paused).",
    ["state"],
    registry=REGISTRY,
)
USERS_REJECTED = Gauge(
    "syncd_users_rejected",
    "Users left out of the configuration in use because their file has "
    "problems (config_user_rejected names them).",
    registry=REGISTRY,
)
CONFIG_RELOADS = Counter(
    "syncd_config_reloads_total",
    "Configuration reloads (SIGHUP), by result (ok, refused).",
    ["result"],
    registry=REGISTRY,
)
PASSES_SKIPPED = Counter(
    "syncd_passes_skipped_total",
    "Scheduled passes not started, by reason (still_running: the user's previous "
    "pass, or its wait for a free slot, had not ended; lease_elsewhere: another "
    "replica serves the user).",
    ["reason"],
    registry=REGISTRY,
)
