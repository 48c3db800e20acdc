"""Operator settings, read once from ``COORDINATOR_*`` environment variables.

Bad values fail at start-up with a message naming the variable (``ConfigurationError``), never later.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from coordinator.domain.addresses import DEFAULT_DENIED_CIDRS, IPNetwork, parse_cidrs
from coordinator.domain.labelselectors import parse_selector

DEFAULT_PROTECTED_NAMESPACES = ("kube-system", "kube-public", "kube-node-lease")


GLOB_CHARS = frozenset("*?[]!")


def uses_patterns(watched: list[str]) -> bool:
    """Whether a namespace list holds globs (kopf's pattern syntax) rather than exact names."""
    return any(GLOB_CHARS & set(pattern) for pattern in watched)


class ConfigurationError(ValueError):
    """A setting has a bad value; the message names the environment variable."""


class Settings(BaseSettings):
    """Every knob of the operator. The README's settings table mirrors this class."""

    # allow_inf_nan=False: "inf" as an interval would silently switch the periodic sweep off.
    model_config = SettingsConfigDict(env_prefix="COORDINATOR_", extra="ignore", frozen=True, allow_inf_nan=False)

    instance_name: str = Field(
        default="test-coordinator",
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        max_length=40,
        description="Name of this operator instance; prefixes its finalizer-independent keys and history tables.",
    )
    namespace: str = Field(default="test-coordinator", description="The namespace the operator itself runs in.")
    watch_namespaces: str = Field(
        default="", description="Comma-separated namespaces whose TestRuns are handled; empty means cluster-wide."
    )
    protected_namespaces: str = Field(
        default=",".join(DEFAULT_PROTECTED_NAMESPACES),
        description="Comma-separated namespaces never touched (the operator's own namespace is always added).",
    )
    cluster_wide_targeting: bool = Field(
        default=False,
        description="Allow targets in any unprotected namespace; by default a namespace must carry "
        "the label chaos.coordinator.dev/allow=true.",
    )
    node_targeting: bool = Field(
        default=False,
        description="Allow Node targets (node-cordon, node-drain) at all; the requester must still be allowed to "
        "patch nodes and evict pods. The cluster-wide install sets it.",
    )
    webhook_port: int = Field(
        default=9443, ge=1, le=65535, description="Port the admission webhooks are served on (HTTPS)."
    )
    webhook_address: str = Field(
        default="127.0.0.1",
        min_length=1,
        description="Address the admission webhooks listen on; 0.0.0.0 in the cluster (behind the Service).",
    )
    webhook_host: str = Field(
        default="127.0.0.1",
        min_length=1,
        description="Host name or address the API server reaches the webhooks at when run as a local process "
        "(https://<host>:<port>); the serving certificate covers it.",
    )
    webhook_service: str = Field(
        default="",
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?)?$",
        max_length=63,
        description="In the cluster: the Service in the operator's namespace that fronts the webhooks; the "
        "configurations then name it instead of a URL.",
    )
    # A pod-kill run costs the operator's client 11 requests (benchmarks/README.md): 300/s sustains 27 runs/s.
    # The burst covers a step over 1,000 targets (10 % of 10,000 pods: 1,000 deletions, 100 Events) at once,
    # and 100 runs created at once up to their first injection (about 6 requests each).
    api_qps: float = Field(default=300.0, gt=0, description="Sustained Kubernetes API requests per second.")
    api_burst: int = Field(default=1200, ge=1, description="Kubernetes API requests allowed in a burst.")
    watch_server_timeout: int = Field(default=300, ge=10, description="Seconds the API server keeps a watch open.")
    watch_client_timeout: int = Field(default=330, ge=10, description="Seconds before the client gives up on a watch.")
    sweep_interval: float = Field(
        default=30.0, gt=0, description="Seconds between sweeps for faults whose run is finished or gone."
    )
    poll_interval: float = Field(default=0.5, gt=0, le=10, description="Seconds between checks while a fault holds.")
    recovery_interval: float = Field(
        default=0.1, gt=0, le=10, description="Seconds between steady-state checks while measuring recovery time."
    )
    agent_image: str = Field(
        default="test-coordinator-tools:0.1.0",
        min_length=1,
        description="Image of the in-pod fault agent (the Dockerfile's tools stage: iproute2, nftables, stress-ng).",
    )
    agent_start_timeout: float = Field(
        default=30.0,
        gt=0,
        le=600,
        description="Seconds an in-pod agent may take to start and confirm its fault; after that the fault counts "
        "as not applied and the run ends Error (image missing, node without containers).",
    )
    prometheus_url: str | None = Field(
        default=None, description="Prometheus base URL for prometheus probes that name no endpoint."
    )
    # NoDecode: the variable is a comma-separated list (like the namespace lists), not JSON.
    probe_deny_cidrs: Annotated[tuple[IPNetwork, ...], NoDecode] = Field(
        default=parse_cidrs(DEFAULT_DENIED_CIDRS),
        description="Comma-separated CIDRs that http, prometheus and grpc probes never connect to, whatever name "
        "resolves to them: link-local and cloud metadata addresses by default (docs/probe-reach.md); empty "
        "denies nothing.",
    )
    # Secrets: pydantic masks SecretStr in repr(), so logging the settings never shows a password.
    database_url: SecretStr | None = Field(
        default=None,
        description="SQLAlchemy URL of the history database (postgresql+asyncpg://...); the embedded SQLite file "
        "at history_path when unset.",
    )
    history_path: Path | None = Field(
        default=None,
        description="The embedded SQLite history file; default $XDG_DATA_HOME/test-coordinator/history.db.",
    )
    history_retention_days: int = Field(
        default=90, ge=0, description="Runs that completed longer ago are purged from the history; 0 keeps them."
    )
    history_delete_wait: float = Field(
        default=900,
        ge=0,
        le=7 * 24 * 3600,
        description="Seconds a deleted TestRun not yet in the history keeps its finalizer while the history "
        "database is unavailable (its namespace's deletion waits too); then it goes unrecorded, logged as an error.",
    )
    redis_url: SecretStr | None = Field(
        default=None,
        description="Redis URL (redis://...) for live progress, target locks and the report cache; in-process "
        "equivalents when unset.",
    )
    database_pool_size: int = Field(
        default=5,
        ge=1,
        le=200,
        description="Connections the history database pool keeps open (PostgreSQL; SQLite opens one per use).",
    )
    database_max_overflow: int = Field(
        default=10,
        ge=0,
        le=1000,
        description="Connections the history database pool may open beyond its size at peaks, closed when returned.",
    )
    redis_pool_size: int = Field(
        default=32,
        ge=1,
        le=1000,
        description="Most Redis connections at once; more commands wait for a free one (up to 2 s) rather than fail.",
    )
    report_cache_ttl: float = Field(
        default=60.0, ge=0, description="Seconds a report's aggregates stay cached; 0 disables the cache."
    )
    progress_ttl: float = Field(
        default=24 * 3600.0,
        ge=60,
        le=30 * 24 * 3600,
        description="Seconds a run's live progress (Redis, or in-process) is kept after its last update.",
    )
    max_concurrent_runs: int = Field(
        default=0,
        ge=0,
        description="TestRuns allowed in phase Running at once, cluster-wide; more wait in Pending (reason Queued). "
        "0 means no limit.",
    )

    # --- running it: health and metrics server, logs, sharding, leader election --------------------------------
    environment: str = Field(
        default="development",
        max_length=63,
        description="Where this instance runs (development, staging, production); reported by /healthz and /readyz.",
    )
    selector: str = Field(
        default="",
        description="Label selector (kubectl syntax): handle only the TestRuns and ChaosScenarios whose labels "
        "match, to shard them across instances; empty handles all. Also coordinator run --selector.",
    )
    log_format: Literal["json", "console"] = Field(
        default="json", description="json: one JSON object per line; console: coloured lines for humans."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO", description="Lowest level logged.")
    metrics_port: int = Field(
        default=8080, ge=0, le=65535, description="Port of /metrics, /healthz and /readyz; 0 serves none of them."
    )
    metrics_address: str = Field(
        default="0.0.0.0",  # noqa: S104 - in a pod the kubelet and Prometheus reach it from outside
        description="Address the metrics and health server binds to.",
    )
    leader_election: bool = Field(
        default=False,
        description="Run as one of several replicas: only the holder of the Lease executes runs (the install "
        "manifests turn it on).",
    )
    leader_election_lease_name: str = Field(
        default="",
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?)?$",
        max_length=63,
        description="Name of the Lease in the operator's namespace; default <instance name>-leader.",
    )
    leader_election_lease_duration: float = Field(
        default=15.0, gt=0, le=300, description="Seconds a standby waits after the last renewal before taking over."
    )
    leader_election_renew_deadline: float = Field(
        default=10.0, gt=0, description="Seconds the leader keeps trying to renew before it gives up leading."
    )
    leader_election_retry_period: float = Field(
        default=2.0, gt=0, description="Seconds between renewals (leader) and between attempts (standby)."
    )
    identity: str = Field(
        default="",
        max_length=128,
        description="This replica's name in the Lease; default the host name plus a random suffix.",
    )

    @field_validator("selector")
    @classmethod
    def _selector(cls, value: str) -> str:
        return str(parse_selector(value))

    @model_validator(mode="after")
    def _leader_election(self) -> Settings:
        if not (
            self.leader_election_retry_period
            < self.leader_election_renew_deadline
            < self.leader_election_lease_duration
        ):
            raise ValueError(
                "COORDINATOR_LEADER_ELECTION_RETRY_PERIOD < COORDINATOR_LEADER_ELECTION_RENEW_DEADLINE < "
                "COORDINATOR_LEADER_ELECTION_LEASE_DURATION must hold"
            )
        return self

    @property
    def lease_name(self) -> str:
        return self.leader_election_lease_name or f"{self.instance_name}-leader"

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _any_case(cls, value: object, info: ValidationInfo) -> object:
        # COORDINATOR_LOG_LEVEL=info is as clear as INFO; the message still lists the canonical spellings.
        if not isinstance(value, str):
            return value
        return value.strip().upper() if info.field_name == "log_level" else value.strip().lower()

    @field_validator("probe_deny_cidrs", mode="before")
    @classmethod
    def _cidrs(cls, value: object) -> object:
        return parse_cidrs(value) if isinstance(value, str) else value

    @field_validator("watch_namespaces", "protected_namespaces")
    @classmethod
    def _names(cls, value: str) -> str:
        return ",".join(part.strip() for part in value.split(",") if part.strip())

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: SecretStr | None) -> SecretStr | None:
        # The message never repeats the URL: it may hold a password.
        if value is None or not value.get_secret_value():
            return None
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            url = make_url(value.get_secret_value())
        except ArgumentError:
            raise ValueError("not a database URL (expected postgresql+asyncpg://user:password@host/db)") from None
        if url.get_backend_name() not in ("postgresql", "sqlite"):
            raise ValueError(f"unsupported database {url.get_backend_name()!r}: use postgresql or sqlite")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        if not value.get_secret_value().startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("not a Redis URL (expected redis://host:port/db, rediss:// or unix://)")
        return value

    @model_validator(mode="after")
    def _timeouts(self) -> Settings:
        if self.watch_client_timeout <= self.watch_server_timeout:
            raise ValueError("COORDINATOR_WATCH_CLIENT_TIMEOUT must exceed COORDINATOR_WATCH_SERVER_TIMEOUT")
        return self

    @property
    def protected(self) -> frozenset[str]:
        names = {n for n in self.protected_namespaces.split(",") if n}
        names.add(self.namespace)
        return frozenset(names)

    @property
    def watched(self) -> list[str]:
        return [n for n in self.watch_namespaces.split(",") if n]

    @property
    def watches_patterns(self) -> bool:
        """Whether ``watched`` holds globs (kopf then discovers the namespaces) rather than exact names."""
        return uses_patterns(self.watched)

    @property
    def history_file(self) -> Path:
        """Where the embedded SQLite history lives when no database URL is set."""
        if self.history_path is not None:
            return self.history_path
        data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
        return Path(data_home) / "test-coordinator" / "history.db"


def load_settings() -> Settings:
    """Read and validate the environment, turning pydantic's error into one naming the variables."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"COORDINATOR_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}" if err["loc"] else err["msg"]
            for err in exc.errors()
        )
        raise ConfigurationError(f"invalid settings: {problems}") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, loaded once."""
    return load_settings()
