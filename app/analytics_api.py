"""The reference analytics API: small on purpose, real in its health contract.

    GET /health/live     200 while the process serves at all
    GET /health/ready    200 when it should get traffic: not draining, and the database answered
                         its last check (when DB_HOST is set); 503 otherwise. The check runs in
                         the background at most every READY_CHECK_INTERVAL_SECONDS and the probe
                         reads its cached result, so a slow database never makes every pod's
                         probe time out at once; a result older than READY_MAX_AGE_SECONDS (a
                         check that hangs) counts as not ready.
    GET /api/v1/status   version, color and environment
    GET /metrics         Prometheus metrics

Every response carries X-Color and X-Version, so a release can check which color answered.
Every request is a SERVER span and every database call a psycopg CLIENT span (tracing.py); each
log line written under a span carries its trace_id and span_id.
On SIGTERM it reports not-ready at once, keeps serving for DRAIN_SECONDS (load balancers and
kube-proxy stop sending meanwhile), then closes.

Database credentials are never a deploy-time copy. `DB_AUTH=iam` signs an RDS IAM token for each
new connection with the pod's own AWS credentials (EKS Pod Identity); `DB_AUTH=password-file`
reads a mounted file, which a secret sync refreshes. A connection that fails is retried once with
fresh credentials, so a rotated password or an expired token costs at most one failed attempt.
"""

from __future__ import annotations

import contextvars
import json
import math
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol

import tracing
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)

# The request paths the app answers, which are also the spans' http.route: none has parameters.
ROUTES = ("/health/live", "/health/ready", "/api/v1/status", "/metrics")


@dataclass(frozen=True)
class Config:
    color: str = "unknown"
    version: str = "unknown"
    environment: str = "unknown"
    port: int = 8080
    drain_seconds: float = 25.0
    db_host: str | None = None
    db_port: int = 5432
    db_name: str = "postgres"
    db_user: str | None = None
    # none (the server's own auth, e.g. a local socket), iam, or password-file
    db_auth: str = "none"
    db_password_file: str | None = None
    db_sslmode: str = "require"
    ready_check_interval_seconds: float = 5.0
    ready_max_age_seconds: float = 30.0
    aws_region: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Config:
        return cls(
            color=env.get("APP_COLOR", "unknown"),
            version=env.get("APP_VERSION", "unknown"),
            environment=env.get("APP_ENVIRONMENT", "unknown"),
            port=int(env.get("PORT", "8080")),
            drain_seconds=float(env.get("DRAIN_SECONDS", "25")),
            db_host=env.get("DB_HOST") or None,
            db_port=int(env.get("DB_PORT", "5432")),
            db_name=env.get("DB_NAME", "postgres"),
            db_user=env.get("DB_USER") or None,
            db_auth=env.get("DB_AUTH", "none"),
            db_password_file=env.get("DB_PASSWORD_FILE") or None,
            db_sslmode=env.get("DB_SSLMODE", "require"),
            ready_check_interval_seconds=float(env.get("READY_CHECK_INTERVAL_SECONDS", "5")),
            ready_max_age_seconds=float(env.get("READY_MAX_AGE_SECONDS", "30")),
            aws_region=env.get("AWS_REGION") or None,
        )


class CachedCheck:
    """The last result of a slow check, refreshed in a background thread; readers never wait.

    A refresh starts when a reader finds the result older than `interval` and none is running,
    so checks follow the probes' pace, one at a time. No result yet, or one older than `max_age`
    (the running check hangs), reads as not ready.
    """

    def __init__(
        self,
        check: Callable[[], tuple[bool, str]],
        interval: float,
        max_age: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._check, self._interval, self._max_age, self._clock = check, interval, max_age, clock
        self._lock = threading.Lock()
        self._running = False
        self._result: tuple[bool, str] | None = None
        self._checked_at = -math.inf

    def refresh_async(self) -> None:
        with self._lock:
            if self._running:
                return
            self._running = True
        # In the caller's context: the check's database span is a child of the request's span.
        context = contextvars.copy_context()
        threading.Thread(target=context.run, args=(self._run,), daemon=True).start()

    def _run(self) -> None:
        try:
            result = self._check()
        except Exception as exc:  # a failing check is a not-ready answer, never a dead thread
            result = (False, f"check failed: {type(exc).__name__}")
        with self._lock:
            self._result, self._checked_at, self._running = result, self._clock(), False

    def current(self) -> tuple[bool, str]:
        age = self._clock() - self._checked_at
        if age >= self._interval:
            self.refresh_async()
        if self._result is None:
            return False, "starting: the first database check is running"
        if age > self._max_age:
            return False, f"database check result is stale ({age:.0f} s old)"
        return self._result


class Credentials(Protocol):
    """Where a connection's password comes from."""

    def password(self) -> str | None: ...

    def invalidate(self) -> None:
        """Called after a refused connection: the next password() must be fresh."""
        ...


class NoPassword:
    """The server's own authentication, e.g. a local socket."""

    def password(self) -> str | None:
        return None

    def invalidate(self) -> None:
        return None


@dataclass
class PasswordFile:
    """A mounted secret file. Kubernetes refreshes the file, so it is re-read after a failure."""

    path: Path
    _cached: str | None = field(default=None, repr=False)

    def password(self) -> str | None:
        if self._cached is None:
            self._cached = self.path.read_text().strip()
        return self._cached

    def invalidate(self) -> None:
        self._cached = None


@dataclass(frozen=True)
class IamAuthToken:
    """An RDS IAM authentication token, signed locally for each connection (valid 15 minutes)
    with the pod's AWS credentials, which EKS Pod Identity provides and renews."""

    host: str
    port: int
    user: str
    region: str

    def password(self) -> str | None:
        import boto3  # only pods that use IAM authentication need it

        client = boto3.client("rds", region_name=self.region)
        return str(
            client.generate_db_auth_token(
                DBHostname=self.host, Port=self.port, DBUsername=self.user, Region=self.region
            )
        )

    def invalidate(self) -> None:
        return None  # every password() is a new token already


def credentials_for(config: Config) -> Credentials:
    if config.db_auth == "iam":
        if not (config.db_host and config.db_user and config.aws_region):
            raise ValueError("DB_AUTH=iam needs DB_HOST, DB_USER and AWS_REGION")
        return IamAuthToken(config.db_host, config.db_port, config.db_user, config.aws_region)
    if config.db_auth == "password-file":
        if not config.db_password_file:
            raise ValueError("DB_AUTH=password-file needs DB_PASSWORD_FILE")
        return PasswordFile(Path(config.db_password_file))
    if config.db_auth == "none":
        return NoPassword()
    raise ValueError(f"DB_AUTH={config.db_auth}: allowed: iam, password-file, none")


class DatabaseClient:
    """One long-lived connection, replaced with fresh credentials when it fails."""

    def __init__(self, config: Config, credentials: Credentials, failures: Counter) -> None:
        self.config = config
        self.credentials = credentials
        self.failures = failures
        self._connection: Any = None
        self._lock = threading.Lock()

    def ping(self) -> tuple[bool, str]:
        import psycopg  # imported here: the app runs without a database too

        with self._lock:
            error: Exception | None = None
            # A dropped connection (restart, failover, terminated backend) gets one new try.
            for _attempt in range(2):
                try:
                    self._connected().execute("SELECT 1")
                    return True, "database reachable"
                except psycopg.Error as exc:
                    self._close()
                    error = exc
            return False, f"database unreachable: {type(error).__name__}"

    def _connected(self) -> Any:
        import psycopg

        if self._connection is None or self._connection.closed:
            try:
                self._connection = self._connect()
            except psycopg.OperationalError:
                # A rotated password or an expired token: count it, then retry once with
                # credentials fetched afresh.
                self.failures.inc()
                self.credentials.invalidate()
                self._connection = self._connect()
        return self._connection

    def _connect(self) -> Any:
        import psycopg

        return psycopg.connect(
            host=self.config.db_host,
            port=self.config.db_port,
            dbname=self.config.db_name,
            user=self.config.db_user,
            password=self.credentials.password(),
            sslmode=self.config.db_sslmode,
            connect_timeout=2,
            autocommit=True,
        )

    def _close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()


class App:
    def __init__(
        self,
        config: Config,
        credentials: Credentials | None = None,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        self.config = config
        # Without a provider, the global one (main() configures it).
        self.tracer = trace.get_tracer("analytics_api", tracer_provider=tracer_provider)
        self.draining = threading.Event()
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "http_requests", "HTTP requests", ["path", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "http_request_duration_seconds", "Request latency", ["path"], registry=self.registry
        )
        self.db_connection_failures = Counter(
            "db_connection_failures",
            "Database connections refused; each is retried once with fresh credentials",
            registry=self.registry,
        )
        self.database = (
            DatabaseClient(
                config, credentials or credentials_for(config), self.db_connection_failures
            )
            if config.db_host
            else None
        )
        self.readiness = CachedCheck(
            self.database_ok, config.ready_check_interval_seconds, config.ready_max_age_seconds
        )

    def ready(self) -> tuple[bool, str]:
        if self.config.db_host is None:
            return True, "no database configured"
        return self.readiness.current()

    def database_ok(self) -> tuple[bool, str]:
        if self.database is None:
            return True, "no database configured"
        return self.database.ping()

    def handle(self, path: str) -> tuple[int, str, bytes]:
        """(status, content type, body) for a GET of `path`."""
        if path == "/health/live":
            return 200, "application/json", b'{"status": "live"}'
        if path == "/health/ready":
            if self.draining.is_set():
                return _json(503, {"status": "draining"})
            ok, detail = self.ready()
            return _json(200 if ok else 503, {"status": "ready" if ok else "not ready",
                                              "detail": detail})  # fmt: skip
        if path == "/api/v1/status":
            return _json(
                200,
                {
                    "version": self.config.version,
                    "color": self.config.color,
                    "environment": self.config.environment,
                },
            )
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest(self.registry)
        return _json(404, {"error": "not found"})


def log(level: str, **fields: Any) -> None:
    """One JSON object a line on stderr; the platform counts `"level": "error"` lines. Under a
    span, the line carries its trace_id and span_id (CloudWatch Logs to X-Ray)."""
    sys.stderr.write(json.dumps({"level": level, **fields, **tracing.log_fields()}) + "\n")


def _json(status: int, body: dict[str, Any]) -> tuple[int, str, bytes]:
    return status, "application/json", json.dumps(body).encode()


def make_server(app: App, host: str = "0.0.0.0", port: int | None = None) -> ThreadingHTTPServer:  # noqa: S104 - a pod listens on its own IP  # nosec B104
    class Handler(BaseHTTPRequestHandler):
        server_version = "analytics-api"

        def do_GET(self) -> None:
            started = time.perf_counter()
            path = self.path.split("?", 1)[0]
            route = path if path in ROUTES else None
            attributes = self._span_attributes(path)
            with tracing.server_span(app.tracer, self.headers, "GET", route, attributes) as span:
                status, content_type, body, error_type = self._answer(path)
                tracing.set_response(span, status, error_type)
                self._respond(status, content_type, body)
            known = path if status != 404 else "other"
            app.requests.labels(known, str(status)).inc()
            app.latency.labels(known).observe(time.perf_counter() - started)

        def _answer(self, path: str) -> tuple[int, str, bytes, str | None]:
            """(status, content type, body, the exception's class if one ended the request)."""
            try:
                return (*app.handle(path), None)
            except Exception as exc:  # any failure is a 500 and an error log line, never a crash
                log("error", event="unhandled", path=path, error=type(exc).__name__)
                return (*_json(500, {"error": "internal error"}), type(exc).__qualname__)

        def _span_attributes(self, path: str) -> dict[str, str | int]:
            """HTTP server span attributes (semantic conventions). Not url.query: a query string
            can carry tokens, and no route reads one."""
            host = self.headers.get("Host") or ""
            name, _, port = (
                host.rpartition(":") if re.fullmatch(r".+:\d+", host) else (host, "", "")
            )
            forwarded = self.headers.get("X-Forwarded-For") or ""
            attributes: dict[str, str | int] = {
                "http.request.method": "GET",
                "url.path": path,
                "url.scheme": "http",
                "network.protocol.version": self.request_version.removeprefix("HTTP/"),
                "network.peer.address": self.client_address[0],
                # Behind the ALB, the client is the first address it forwards.
                "client.address": forwarded.split(",")[0].strip() or self.client_address[0],
            }
            if name:
                attributes["server.address"] = name.strip("[]")
            if port:
                attributes["server.port"] = int(port)
            if self.headers.get("User-Agent"):
                attributes["user_agent.original"] = self.headers["User-Agent"]
            return attributes

        def _respond(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Color", app.config.color)
            self.send_header("X-Version", app.config.version)
            self.end_headers()
            self.wfile.write(body)

        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            status = int(code) if isinstance(code, int) else 0
            # Readiness answers 503 while draining or without a database: that is the health
            # contract working, not an error.
            failed = status >= 500 and not self.path.startswith("/health/")
            # Without the query string, as in the span: it can carry tokens.
            request = re.sub(r"\?\S*", "", self.requestline, count=1)
            log("error" if failed else "info", request=request, status=status)

        def log_message(self, format: str, *args: Any) -> None:
            log("info", message=format % args)

        def log_error(self, format: str, *args: Any) -> None:
            log("error", message=format % args)

    server = ThreadingHTTPServer((host, app.config.port if port is None else port), Handler)
    server.daemon_threads = True
    return server


def main() -> int:
    config = Config.from_env(os.environ)
    provider = tracing.configure(config.version, config.environment, config.color)
    app = App(config, tracer_provider=provider)
    server = make_server(app)
    if app.config.db_host is not None:
        app.readiness.refresh_async()  # the first result is ready by the first probe

    def on_sigterm(_signum: int, _frame: object) -> None:
        app.draining.set()

        def drain_then_stop() -> None:
            time.sleep(app.config.drain_seconds)
            server.shutdown()

        threading.Thread(target=drain_then_stop, daemon=True).start()

    signal.signal(signal.SIGTERM, on_sigterm)
    print(json.dumps({"listening": server.server_address[1], "color": app.config.color}),
          flush=True)  # fmt: skip
    server.serve_forever()
    server.server_close()
    provider.shutdown()  # after draining: the batch processor sends the last spans
    return 0


if __name__ == "__main__":
    sys.exit(main())
