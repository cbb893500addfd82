"""The reference analytics API, on loopback, against a real PostgreSQL server."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pgserver
import pytest

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "app"))
import db_bootstrap
import tracing
from analytics_api import App, Config, IamAuthToken, PasswordFile, credentials_for, make_server


@pytest.fixture(scope="module")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A real PostgreSQL server, started by the test itself (pgserver ships the binaries)."""
    data_dir = tmp_path_factory.mktemp("pgdata")
    try:
        server = pgserver.get_server(data_dir, cleanup_mode="stop")
    except subprocess.CalledProcessError:
        # initdb has been seen to fail once under a heavily loaded machine; a second, fresh
        # data directory tells a passing hiccup from a broken install.
        data_dir = tmp_path_factory.mktemp("pgdata")
        server = pgserver.get_server(data_dir, cleanup_mode="stop")
    try:
        socket_dir = re.search(r"host=([^&]+)", server.get_uri())
        assert socket_dir is not None
        # pgserver trusts every local user; the application roles must prove a password, as
        # they do on RDS.
        hba = data_dir / "pg_hba.conf"
        hba.write_text("local all app_rotating scram-sha-256\n" + hba.read_text())
        server.psql("SELECT pg_reload_conf();")
        yield {"DB_HOST": socket_dir.group(1), "DB_NAME": "postgres", "DB_USER": "postgres",
               "DB_SSLMODE": "disable"}  # fmt: skip
    finally:
        server.cleanup()


def _admin(postgres: dict[str, str]) -> Any:
    import psycopg

    return psycopg.connect(host=postgres["DB_HOST"], dbname="postgres", user="postgres",
                           autocommit=True)  # fmt: skip


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310 - loopback only
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - loopback only
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def _serve(env: dict[str, str], tracer_provider: Any = None) -> tuple[str, App, Any]:
    app = App(Config.from_env({"APP_COLOR": "green", "APP_VERSION": "1.5.0",
                               "APP_ENVIRONMENT": "test", **env}),
              tracer_provider=tracer_provider)  # fmt: skip
    server = make_server(app, host="127.0.0.1", port=0)
    # A short poll: shutdown() waits up to one interval, once per test.
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}", app, server


def test_every_endpoint_answers_with_color_and_version_headers() -> None:
    base, _, server = _serve({})
    try:
        expected = {"/health/live": 200, "/health/ready": 200, "/api/v1/status": 200,
                    "/metrics": 200, "/nope": 404}  # fmt: skip
        for path, status in expected.items():
            code, headers, _ = _get(base + path)
            assert code == status, path
            assert headers["X-Color"] == "green"
            assert headers["X-Version"] == "1.5.0"
        _, _, body = _get(base + "/api/v1/status")
        assert json.loads(body) == {"version": "1.5.0", "color": "green", "environment": "test"}
        _, headers, metrics = _get(base + "/metrics")
        assert headers["Content-Type"].startswith("text/plain")
        assert b'http_requests_total{path="/api/v1/status",status="200"}' in metrics
    finally:
        server.shutdown()


def test_a_failing_handler_answers_500_and_logs_one_error_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    base, app, server = _serve({})
    try:

        def broken(path: str) -> tuple[int, str, bytes]:
            raise RuntimeError(path)

        assert _get(base + "/api/v1/status")[0] == 200
        monkeypatch.setattr(app, "handle", broken)
        code, headers, _ = _get(base + "/api/v1/status")
        assert code == 500
        assert headers["X-Color"] == "green"
    finally:
        server.shutdown()
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    errors = [line for line in lines if line["level"] == "error"]
    # The monitoring's metric filter counts exactly these: { $.level = "error" }
    assert [e.get("event") for e in errors] == ["unhandled", None]
    assert errors[1]["status"] == 500
    assert all(line["level"] == "info" for line in lines if line.get("status") == 200)


def test_a_draining_readiness_503_is_not_an_error_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    base, app, server = _serve({})
    try:
        app.draining.set()
        assert _get(base + "/health/ready")[0] == 503
    finally:
        server.shutdown()
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [line["level"] for line in lines] == ["info"]


def _ready_within(url: str, seconds: float, detail_prefix: str) -> tuple[int, dict[str, Any]]:
    """Polls readiness until its detail starts with `detail_prefix`; the last answer."""
    deadline = time.monotonic() + seconds
    while True:
        code, _, body = _get(url)
        answer = json.loads(body)
        if answer["detail"].startswith(detail_prefix) or time.monotonic() > deadline:
            return code, answer
        time.sleep(0.05)


FAST_CHECKS = {"READY_CHECK_INTERVAL_SECONDS": "0.2", "READY_MAX_AGE_SECONDS": "5"}


def test_readiness_checks_a_real_database(postgres: dict[str, str]) -> None:
    base, app, server = _serve({**postgres, **FAST_CHECKS})
    try:
        code, answer = _ready_within(base + "/health/ready", 10, "database reachable")
        assert (code, answer["status"]) == (200, "ready"), answer
        assert app.database_ok() == (True, "database reachable")
    finally:
        server.shutdown()


def test_readiness_answers_from_a_cached_check_while_the_database_is_slow(
    postgres: dict[str, str],
) -> None:
    """A readiness probe that outlasts timeoutSeconds (default 1 s) fails; if every pod waits on
    one slow database, every pod leaves the Service at once. The probe reads the last result
    instead (kubernetes.io: Configure Liveness, Readiness and Startup Probes, timeoutSeconds)."""
    base, app, server = _serve({**postgres, **FAST_CHECKS})
    checks: list[float] = []
    real_check = app.readiness._check  # the real PostgreSQL check, made slow below

    def slow_check() -> tuple[bool, str]:
        checks.append(time.monotonic())
        time.sleep(1.5)
        return real_check()

    try:
        assert _ready_within(base + "/health/ready", 10, "database reachable")[0] == 200
        app.readiness._check = slow_check
        started = time.monotonic()
        answers = []
        while time.monotonic() - started < 2.5:
            before = time.monotonic()
            code, _, _ = _get(base + "/health/ready")
            answers.append((code, time.monotonic() - before))
            time.sleep(0.05)
        assert {code for code, _ in answers} == {200}
        assert max(elapsed for _, elapsed in answers) < 0.5  # never waits for the database
        assert 1 <= len(checks) <= 2  # one check at a time, not one per probe
        assert len(answers) > 10
    finally:
        server.shutdown()


def test_a_check_that_hangs_turns_not_ready_once_its_result_is_stale(
    postgres: dict[str, str],
) -> None:
    base, app, server = _serve({**postgres, "READY_CHECK_INTERVAL_SECONDS": "0.1",
                                "READY_MAX_AGE_SECONDS": "0.6"})  # fmt: skip
    hung = threading.Event()
    try:
        assert _ready_within(base + "/health/ready", 10, "database reachable")[0] == 200
        app.readiness._check = lambda: (hung.wait(30), "released")  # type: ignore[method-assign]
        code, answer = _ready_within(base + "/health/ready", 5, "database check result is stale")
        assert (code, answer["status"]) == (503, "not ready"), answer
    finally:
        hung.set()
        server.shutdown()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_readiness_fails_when_the_database_is_unreachable() -> None:
    unreachable = {"DB_HOST": "127.0.0.1", "DB_PORT": str(_free_port()), "DB_SSLMODE": "disable",
                   "DB_USER": "nobody"}  # fmt: skip
    base, _, server = _serve({**unreachable, **FAST_CHECKS})
    try:
        code, _, body = _get(base + "/health/ready")
        assert (code, json.loads(body)["status"]) == (503, "not ready")  # no result yet
        code, answer = _ready_within(base + "/health/ready", 10, "database unreachable")
        assert (code, answer["status"]) == (503, "not ready"), answer
        assert _get(base + "/health/live")[0] == 200
    finally:
        server.shutdown()


def test_sigterm_stops_readiness_then_drains_and_exits(tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, "PORT": str(port), "DRAIN_SECONDS": "1.5", "APP_COLOR": "blue",
           "APP_VERSION": "2.0.0"}  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "app" / "analytics_api.py")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert json.loads(process.stdout.readline())["listening"] == port
        base = f"http://127.0.0.1:{port}"
        assert _get(base + "/health/ready")[0] == 200
        process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        assert _get(base + "/health/ready")[0] == 503  # out of rotation at once
        assert _get(base + "/api/v1/status")[0] == 200  # still serving while draining
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()


def _dockerfile_lines() -> list[str]:
    """The Dockerfile's lines, continuations joined and global ARG defaults substituted."""
    text = (ROOT / "app" / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [" ".join(line.split()) for line in text.splitlines()]
    args = dict(
        line[len("ARG ") :].split("=", 1)
        for line in lines[: next(i for i, x in enumerate(lines) if x.startswith("FROM "))]
        if line.startswith("ARG ") and "=" in line
    )
    for name, value in args.items():
        lines = [line.replace("${" + name + "}", value) for line in lines]
    return lines


def test_every_stage_starts_from_the_base_image_pinned_by_digest() -> None:
    """A tag is moved when Docker Official Images rebuild it; a digest names one image
    (docs.docker.com: Image digests; docker-library/official-images)."""
    stages = [line for line in _dockerfile_lines() if line.startswith("FROM ")]
    assert len(stages) == 2
    for line in stages:
        image = line.split()[1]
        assert re.fullmatch(r"python:3\.12\.\d+-slim-bookworm@sha256:[0-9a-f]{64}", image), line


def test_the_image_installs_every_package_pinned_by_hash() -> None:
    """--require-hashes refuses any package, transitive ones included, that is not pinned with a
    hash (pip: Secure installs, hash-checking mode)."""
    install = next(line for line in _dockerfile_lines() if "pip install" in line)
    assert "--require-hashes" in install
    assert "--only-binary :all:" in install
    assert "-r /tmp/requirements.lock" in install
    lock = (ROOT / "app" / "requirements.lock").read_text().replace("\\\n", " ")
    pins = {}
    for line in lock.splitlines():
        if line and not line.startswith("#"):
            spec, *hashes = line.split()
            name, _, version = spec.partition("==")
            assert hashes
            assert all(re.fullmatch(r"--hash=sha256:[0-9a-f]{64}", h) for h in hashes)
            pins[name] = version
    top_level = {}
    for line in (ROOT / "app" / "requirements.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            top_level[name.split("[")[0]] = version
    assert top_level.items() <= pins.items()
    # The closure of the app's requirements on CPython 3.12 / Linux, from installed metadata.
    from importlib.metadata import requires

    from packaging.requirements import Requirement

    environment = {"python_version": "3.12", "sys_platform": "linux",
                   "implementation_name": "cpython"}  # fmt: skip
    needed, todo = set(), [(name, "binary" if name == "psycopg" else "") for name in top_level]
    while todo:
        name, extra = todo.pop()
        if name in needed and not extra:
            continue
        needed.add(name)
        for spec in map(Requirement, requires(name) or []):
            if spec.marker is None or spec.marker.evaluate({**environment, "extra": extra}):
                todo.append((spec.name.lower().replace("_", "-"), ""))
    assert set(pins) == needed
    constraints = dict(
        line.lower().replace("_", "-").split("==")
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if "==" in line
    )
    assert {name: constraints[name] for name in pins} == pins


def test_dockerfile_is_slim_non_root_with_a_healthcheck_and_no_build_tools() -> None:
    lines = _dockerfile_lines()
    stages = [i for i, line in enumerate(lines) if line.startswith("FROM ")]
    final = lines[stages[-1] :]
    assert all("-slim" in lines[i] for i in stages)
    user = next(line for line in final if line.startswith("USER "))
    uid = int(user.split()[1].split(":")[0])
    assert uid >= 10000
    assert any(line.startswith("HEALTHCHECK") for line in final)
    text = "\n".join(final)
    for tool in ("apt-get install", "gcc", "build-essential", "pip install"):
        assert tool not in text


def test_requests_survive_a_password_rotation_with_at_most_one_failed_connection(
    postgres: dict[str, str], tmp_path: Path
) -> None:
    """RDS rotates a managed password every 7 days by default ("Password management with Amazon
    RDS and AWS Secrets Manager": rotation schedule), and a mounted Secret file is refreshed in
    place while env vars are read once ("Secrets", kubernetes.io: mounted Secrets are updated
    automatically). The app must pick up the new password on its own: rotate it mid-run and
    cut the app's connection, as a restart or failover would."""
    password_file = tmp_path / "password"
    password_file.write_text("first-password\n")
    with _admin(postgres) as admin:
        admin.execute("DROP ROLE IF EXISTS app_rotating")
        admin.execute("CREATE ROLE app_rotating LOGIN PASSWORD 'first-password'")
    env = {**postgres, "DB_USER": "app_rotating", "DB_AUTH": "password-file",
           "DB_PASSWORD_FILE": str(password_file)}  # fmt: skip
    base, app, server = _serve(env)
    try:
        assert isinstance(app.database.credentials, PasswordFile)  # type: ignore[union-attr]
        # Readiness answers from the last background check; the check itself is the database
        # request, so it is what this test drives, one check at a time.
        assert [app.database_ok()[0] for _ in range(3)] == [True, True, True]
        assert _ready_eventually(base) == 200
        with _admin(postgres) as admin:
            admin.execute("ALTER ROLE app_rotating PASSWORD 'second-password'")
            password_file.write_text("second-password\n")
            terminated = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE usename = 'app_rotating'"
            ).fetchone()
            assert terminated == (1,)  # one long-lived connection, now gone
        checks = [app.database_ok() for _ in range(5)]
        assert checks == [(True, "database reachable")] * 5
        # The cached old password was refused once; the re-read file worked from then on.
        assert app.registry.get_sample_value("db_connection_failures_total") == 1
    finally:
        server.shutdown()


def _ready_eventually(base: str, attempts: int = 50) -> int:
    """/health/ready once the background check has answered (bounded: 50 x 0.1 s)."""
    code = 0
    for _ in range(attempts):
        code = _get(base + "/health/ready")[0]
        if code == 200:
            return code
        time.sleep(0.1)
    return code


def test_a_wrong_password_fails_readiness_without_a_crash(
    postgres: dict[str, str], tmp_path: Path
) -> None:
    """The retry is once per connection: a password that stays wrong is a 503 (the target goes
    unhealthy, "Health checks for Application Load Balancer target groups"), never a loop."""
    password_file = tmp_path / "password"
    password_file.write_text("not-the-password")
    with _admin(postgres) as admin:
        admin.execute("DROP ROLE IF EXISTS app_rotating")
        admin.execute("CREATE ROLE app_rotating LOGIN PASSWORD 'the-password'")
    env = {**postgres, "DB_USER": "app_rotating", "DB_AUTH": "password-file",
           "DB_PASSWORD_FILE": str(password_file)}  # fmt: skip
    base, app, server = _serve(env)
    try:
        assert app.database_ok() == (False, "database unreachable: OperationalError")
        # The check's two connection attempts (the first, and the one retry) each count once.
        assert app.registry.get_sample_value("db_connection_failures_total") == 2
        assert _get(base + "/health/ready")[0] == 503
    finally:
        server.shutdown()


def test_iam_credentials_sign_a_fresh_rds_token_per_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ "Connecting to your DB instance using IAM authentication" (Amazon RDS User Guide): the
    password is a token from generate_db_auth_token for host, port, user and region, signed
    with the pod's credentials (EKS Pod Identity), valid 15 minutes: one per connection."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAOFFLINEEXAMPLE00")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "offline-secret-for-signing-only")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    config = Config.from_env({"DB_HOST": "db.example.eu-west-1.rds.amazonaws.com",
                              "DB_PORT": "5432", "DB_USER": "analytics_api", "DB_AUTH": "iam",
                              "AWS_REGION": "eu-west-1"})  # fmt: skip
    credentials = credentials_for(config)
    assert credentials == IamAuthToken(
        "db.example.eu-west-1.rds.amazonaws.com", 5432, "analytics_api", "eu-west-1"
    )
    token = credentials.password()
    assert token is not None
    assert token.startswith("db.example.eu-west-1.rds.amazonaws.com:5432/?")
    assert "Action=connect" in token
    assert "DBUser=analytics_api" in token
    assert "X-Amz-Expires=900" in token


@pytest.mark.parametrize(
    ("env", "message"),
    [({"DB_AUTH": "iam"}, "DB_AUTH=iam needs DB_HOST, DB_USER and AWS_REGION"),
     ({"DB_AUTH": "password-file"}, "DB_AUTH=password-file needs DB_PASSWORD_FILE"),
     ({"DB_AUTH": "master"}, "DB_AUTH=master: allowed: iam, password-file, none")],
)  # fmt: skip
def test_an_incomplete_credential_setting_is_a_clear_error(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        credentials_for(Config.from_env(env))


def test_bootstrap_creates_an_iam_only_least_privilege_role_and_can_run_again(
    postgres: dict[str, str],
) -> None:
    """ "Creating a database account using IAM authentication" (Amazon RDS User Guide):
    `CREATE USER ...; GRANT rds_iam TO ...`, run by the master user. On RDS that user is not a
    superuser ("Master user account privileges": rds_superuser, CREATEROLE, CREATEDB), so the
    test runs the bootstrap as such a role, owner of its database, as RDS creates it. The Job
    runs on every spec change, so a second run must change nothing; the role reads and writes
    data, owns nothing and creates nothing."""
    import psycopg

    with _admin(postgres) as admin:
        admin.execute("DROP DATABASE IF EXISTS boot_db")
        for role in ("app_boot", "boot_master"):
            admin.execute(f"DROP ROLE IF EXISTS {role}")
        # RDS has these built in: the IAM login role and a master user that is no superuser.
        if not admin.execute("SELECT 1 FROM pg_roles WHERE rolname = 'rds_iam'").fetchone():
            admin.execute("CREATE ROLE rds_iam")
        admin.execute("CREATE ROLE boot_master LOGIN CREATEROLE CREATEDB")
        admin.execute("GRANT rds_iam TO boot_master WITH ADMIN OPTION")
        admin.execute("CREATE DATABASE boot_db OWNER boot_master")

    def connect() -> psycopg.Connection[Any]:
        return psycopg.connect(host=postgres["DB_HOST"], dbname="boot_db", user="boot_master",
                               autocommit=True)  # fmt: skip

    with connect() as master:
        master.execute("CREATE TABLE before_boot (id int)")
    db_bootstrap.bootstrap(connect, ["app_boot"], "boot_db")
    db_bootstrap.bootstrap(connect, ["app_boot"], "boot_db")
    with connect() as master:
        master.execute("CREATE TABLE after_boot (id serial)")
        row = master.execute(
            "SELECT rolcanlogin, rolsuper, rolcreatedb, rolcreaterole, rolbypassrls, "
            "pg_has_role('app_boot', 'rds_iam', 'MEMBER'), "
            "has_table_privilege('app_boot', 'before_boot', 'SELECT, INSERT, UPDATE, DELETE'), "
            "has_table_privilege('app_boot', 'after_boot', 'SELECT, INSERT, UPDATE, DELETE'), "
            "has_sequence_privilege('app_boot', 'after_boot_id_seq', 'USAGE'), "
            "has_table_privilege('app_boot', 'after_boot', 'TRUNCATE'), "
            "has_schema_privilege('app_boot', 'public', 'CREATE') "
            "FROM pg_roles WHERE rolname = 'app_boot'"
        ).fetchone()
    assert row == (True, False, False, False, False, True, True, True, True, False, False)
    with _admin(postgres) as admin:
        password = admin.execute(
            "SELECT rolpassword FROM pg_authid WHERE rolname = 'app_boot'"
        ).fetchone()
    assert password == (None,)  # IAM tokens only


def test_bootstrap_refuses_a_role_name_it_cannot_quote_safely() -> None:
    with pytest.raises(ValueError, match="allowed: lowercase letters, digits and _"):
        db_bootstrap.role_statements('x"; DROP TABLE users; --', "analytics")


# --- Traces -------------------------------------------------------------------------------------

RATIO_SAMPLER = {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "1"}
W3C_PARENT_TRACE, W3C_PARENT_SPAN = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"


def _traced(monkeypatch: pytest.MonkeyPatch, env: dict[str, str] | None = None) -> Any:
    """A provider as main() builds it (sampler from the env), exporting to memory, with psycopg
    instrumented to report to it."""
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    for name, value in {**RATIO_SAMPLER, **(env or {})}.items():
        monkeypatch.setenv(name, value)
    provider = tracing.tracer_provider("1.5.0", "test", "green")
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.instrument_database(provider)
    provider.memory = exporter  # type: ignore[attr-defined]
    return provider


def _service(resource: Any) -> dict[str, Any]:
    keys = ("service.name", "service.version", "deployment.environment.name", "deployment.color")
    return {key: resource[key] for key in keys}


def _get_with(url: str, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 - loopback only
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def _spans(provider: Any, kind: str, count: int = 1, seconds: float = 10) -> list[Any]:
    """The finished spans of `kind` once there are `count` (bounded: the check runs in the
    background), in the order they started: a span ends after its response is sent, so the
    next request's span can end first."""
    deadline = time.monotonic() + seconds
    while True:
        spans = [s for s in provider.memory.get_finished_spans() if s.kind.name == kind]
        if len(spans) >= count or time.monotonic() > deadline:
            return sorted(spans, key=lambda span: span.start_time)
        time.sleep(0.05)


def test_a_readiness_request_is_a_server_span_whose_database_check_is_its_psycopg_child(
    postgres: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """OpenTelemetry semantic conventions, "Semantic conventions for HTTP spans" (HTTP server):
    span name `{http.request.method} {http.route}`, kind SERVER, http.request.method,
    url.path, url.scheme, http.route (the template), http.response.status_code; a 5xx sets the
    span status to Error. "Semantic conventions for database client calls": kind CLIENT, a child
    of the operation that made it. The psycopg instrumentation's default attributes are the
    v1.24 database names (db.system, db.name, db.statement, db.user, net.peer.*), which are
    those the collector's awsxray exporter reads for X-Ray SQL subsegments
    (exporter/awsxrayexporter/internal/translator/sql.go). A probe is traced when its caller
    sends a trace context (W3C Trace Context, traceparent)."""
    with _admin(postgres) as admin:
        db_port = admin.info.port
    provider = _traced(monkeypatch)
    base, _, server = _serve({**postgres, "READY_CHECK_INTERVAL_SECONDS": "60"}, provider)
    port = base.rsplit(":", 1)[1]
    try:
        traceparent = f"00-{W3C_PARENT_TRACE}-{W3C_PARENT_SPAN}-01"
        code, _, body = _get(base + "/health/ready?probe=1", {"traceparent": traceparent})
        assert (code, json.loads(body)["detail"]) == (503, "starting: the first database check "
                                                            "is running")  # fmt: skip
        [client] = _spans(provider, "CLIENT")
    finally:
        server.shutdown()
    [request] = _spans(provider, "SERVER")
    assert request.name == "GET /health/ready"
    assert dict(request.attributes) == {
        "http.request.method": "GET",
        "url.path": "/health/ready",
        "url.scheme": "http",
        "http.route": "/health/ready",
        "http.response.status_code": 503,
        "error.type": "503",
        "network.protocol.version": "1.1",
        "network.peer.address": "127.0.0.1",
        "client.address": "127.0.0.1",
        "server.address": "127.0.0.1",
        "server.port": int(port),
        "user_agent.original": f"Python-urllib/{sys.version_info.major}.{sys.version_info.minor}",
    }
    assert request.status.status_code.name == "ERROR"
    assert request.context.trace_id == int(W3C_PARENT_TRACE, 16)
    assert request.parent.span_id == int(W3C_PARENT_SPAN, 16)
    assert client.name == "SELECT"
    assert client.context.trace_id == request.context.trace_id
    assert client.parent.span_id == request.context.span_id
    assert dict(client.attributes) == {
        "db.system": "postgresql",
        "db.name": "postgres",
        "db.statement": "SELECT 1",
        "db.user": "postgres",
        "net.peer.name": postgres["DB_HOST"],
        "net.peer.port": db_port,
    }
    assert client.status.status_code.name == "UNSET"


def test_the_resource_names_the_service_its_version_environment_and_color(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """OpenTelemetry semantic conventions, resource: service.name, service.version,
    deployment.environment.name; the SDK configuration spec's OTEL_SERVICE_NAME sets
    service.name. deployment.color is this platform's own attribute (blue/green)."""
    provider = _traced(monkeypatch)
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    base, _, server = _serve({}, provider)
    try:
        assert _get(base + "/api/v1/status")[0] == 200
    finally:
        server.shutdown()
    [span] = _spans(provider, "SERVER")
    assert _service(span.resource.attributes) == {
        "service.name": "analytics-api",
        "service.version": "1.5.0",
        "deployment.environment.name": "test",
        "deployment.color": "green",
    }
    monkeypatch.setenv("OTEL_SERVICE_NAME", "analytics-api-canary")
    assert tracing.resource("2.0.0", "prod", "blue").attributes["service.name"] == (
        "analytics-api-canary"
    )


def test_an_incoming_traceparent_is_continued_and_the_request_log_lines_carry_its_trace_id(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """W3C Trace Context, "traceparent Header": the server span takes the caller's trace-id and
    has parent-id as its parent. Log lines carry trace_id (32 hex) and span_id (16 hex), and
    X-Ray's form of the trace id, 1-{first 8 hex}-{other 24}, as the awsxray exporter converts
    a W3C id (opentelemetry-collector-contrib exporter/awsxrayexporter README, "Data
    Conversion"), so CloudWatch Logs and X-Ray traces can be matched. Neither the span nor the
    log line keeps the query string ("Semantic conventions for URL", Sensitive information: in
    systems unable to identify sensitive information, values may be redacted entirely)."""
    provider = _traced(monkeypatch)
    base, _, server = _serve({}, provider)
    traceparent = f"00-{W3C_PARENT_TRACE}-{W3C_PARENT_SPAN}-01"
    try:
        # Behind the ALB the request also has its X-Amzn-Trace-Id Root: the W3C parent wins.
        alb = "Root=1-67891233-abcdef012345678912345678"
        headers = {"traceparent": traceparent, "X-Amzn-Trace-Id": alb}
        assert _get_with(base + "/api/v1/status?api_key=k-5e1f", headers) == 200
    finally:
        server.shutdown()
    [span] = _spans(provider, "SERVER")
    assert "k-5e1f" not in json.dumps(dict(span.attributes))  # no url.query
    assert f"{span.context.trace_id:032x}" == W3C_PARENT_TRACE
    assert f"{span.parent.span_id:016x}" == W3C_PARENT_SPAN
    assert span.parent.is_remote
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    access = [line for line in lines if line.get("status") == 200]
    assert access == [{"level": "info", "request": "GET /api/v1/status HTTP/1.1",
                       "status": 200, "trace_id": W3C_PARENT_TRACE,
                       "span_id": f"{span.context.span_id:016x}",
                       "xray_trace_id": "1-4bf92f35-77b34da6a3ce929d0e0e4736"}]  # fmt: skip


def test_the_load_balancer_trace_id_is_the_trace_of_the_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ "Request tracing for your Application Load Balancer" (ELB User Guide): the ALB adds
    `X-Amzn-Trace-Id: Root=1-{8 hex}-{24 hex}` (with Self= once one was present) and no Parent;
    "Elastic Load Balancing and AWS X-Ray" (X-Ray Developer Guide): load balancers send no data
    to X-Ray. The request's span starts the trace under that Root, so the access log's trace id
    is the trace's. A header with a Parent (an X-Ray-instrumented caller) is continued as such
    (opentelemetry-propagator-aws-xray). Without a header the id is a random W3C one: "AWS X-Ray
    now supports W3C format trace IDs for distributed tracing" (AWS What's New, 2023-10-27;
    ADOT Collector 0.34.0 or later), so no epoch-prefixed AwsXRayIdGenerator is needed."""
    provider = _traced(monkeypatch)
    base, _, server = _serve({}, provider)
    root = "Root=1-67891233-abcdef012345678912345678"
    try:
        alb = {"X-Amzn-Trace-Id": f"Self=1-67891234-12456789abcdef012345678;{root}",
               "X-Forwarded-For": "203.0.113.7, 10.0.1.5"}  # fmt: skip
        assert _get_with(base + "/api/v1/status", alb) == 200
        xray_parent = {"X-Amzn-Trace-Id": f"{root};Parent=53995c3f42cd8ad8;Sampled=1"}
        assert _get_with(base + "/api/v1/status", xray_parent) == 200
        assert _get(base + "/api/v1/status")[0] == 200
    finally:
        server.shutdown()
    behind_alb, behind_xray, direct = _spans(provider, "SERVER", 3)
    assert f"{behind_alb.context.trace_id:032x}" == "67891233abcdef012345678912345678"
    assert behind_alb.parent is None
    # HTTP semantic conventions: client.address is the client behind any intermediary.
    assert behind_alb.attributes["client.address"] == "203.0.113.7"
    assert behind_alb.attributes["network.peer.address"] == "127.0.0.1"
    assert f"{behind_xray.context.trace_id:032x}" == "67891233abcdef012345678912345678"
    assert f"{behind_xray.parent.span_id:016x}" == "53995c3f42cd8ad8"
    assert direct.context.trace_id not in {behind_alb.context.trace_id, 0}


def test_a_zero_ratio_samples_no_new_trace_but_follows_a_sampled_parent(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """OpenTelemetry SDK environment variables: OTEL_TRACES_SAMPLER=parentbased_traceidratio with
    OTEL_TRACES_SAMPLER_ARG=0. The trace SDK spec, "ParentBased": a root span is decided by the
    ratio (0: dropped), a span with a sampled remote parent is recorded. A dropped span still
    has ids, so its log lines still carry a trace id."""
    provider = _traced(monkeypatch, {"OTEL_TRACES_SAMPLER_ARG": "0"})
    base, _, server = _serve({}, provider)
    try:
        assert _get(base + "/api/v1/status")[0] == 200
        unsampled_line = json.loads(capsys.readouterr().err.splitlines()[-1])
        traceparent = f"00-{W3C_PARENT_TRACE}-{W3C_PARENT_SPAN}-01"
        assert _get_with(base + "/api/v1/status", {"traceparent": traceparent}) == 200
        not_sampled = f"00-{W3C_PARENT_TRACE}-{W3C_PARENT_SPAN}-00"
        assert _get_with(base + "/api/v1/status", {"traceparent": not_sampled}) == 200
    finally:
        server.shutdown()
    [span] = _spans(provider, "SERVER")
    assert f"{span.context.trace_id:032x}" == W3C_PARENT_TRACE
    assert re.fullmatch(r"[0-9a-f]{32}", unsampled_line["trace_id"])
    assert unsampled_line["trace_id"] != W3C_PARENT_TRACE
    assert re.fullmatch(r"[0-9a-f]{16}", unsampled_line["span_id"])


def test_a_500_is_an_error_span_and_its_log_lines_carry_the_span_trace_id(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """ "Semantic conventions for HTTP spans", status: a server span's status is Error for a 5xx
    and unset for a 4xx (the client's error); error.type is the exception's class when one
    ended the request. http.route is set only when a route matched: never the raw path."""
    provider = _traced(monkeypatch)
    base, app, server = _serve({}, provider)
    try:

        def broken(path: str) -> tuple[int, str, bytes]:
            raise RuntimeError("db password is hunter2")

        assert _get(base + "/nope/123")[0] == 404
        monkeypatch.setattr(app, "handle", broken)
        assert _get(base + "/api/v1/status")[0] == 500
    finally:
        server.shutdown()
    missing, failed = _spans(provider, "SERVER", 2)
    assert (missing.name, missing.status.status_code.name) == ("GET", "UNSET")
    assert "http.route" not in missing.attributes
    assert missing.attributes["http.response.status_code"] == 404
    assert failed.status.status_code.name == "ERROR"
    assert failed.attributes["http.response.status_code"] == 500
    assert failed.attributes["error.type"] == "RuntimeError"
    assert failed.events == ()  # no exception event: its message could carry anything
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    trace_id = f"{failed.context.trace_id:032x}"
    errors = [line for line in lines if line["level"] == "error"]
    assert [(e.get("event"), e["trace_id"], e["span_id"]) for e in errors] == [
        ("unhandled", trace_id, f"{failed.context.span_id:016x}"),
        (None, trace_id, f"{failed.context.span_id:016x}"),
    ]
    assert "hunter2" not in capsys.readouterr().err


def test_no_password_or_query_parameter_reaches_a_span(
    postgres: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The psycopg instrumentation records connection info (database, user, host, port) and the
    statement as written; parameters only with capture_parameters (db.statement.parameters),
    which stays off, as does sqlcommenter (opentelemetry-instrumentation-dbapi). "Semantic
    conventions for database client calls": parameter values SHOULD NOT be recorded."""
    password_file = tmp_path / "password"
    password_file.write_text("pw-9f3c-not-in-spans\n")
    with _admin(postgres) as admin:
        admin.execute("DROP ROLE IF EXISTS app_rotating")
        admin.execute("CREATE ROLE app_rotating LOGIN PASSWORD 'pw-9f3c-not-in-spans'")
    provider = _traced(monkeypatch)
    env = {**postgres, "DB_USER": "app_rotating", "DB_AUTH": "password-file",
           "DB_PASSWORD_FILE": str(password_file)}  # fmt: skip
    _, app, server = _serve(env, provider)
    server.shutdown()
    assert app.database_ok() == (True, "database reachable")
    assert app.database is not None
    app.database._connected().execute("SELECT %s::text", ["token-77e1-not-in-spans"])
    spans = _spans(provider, "CLIENT", 2)
    assert [s.attributes["db.statement"] for s in spans] == ["SELECT 1", "SELECT %s::text"]
    recorded = json.dumps([dict(s.attributes) for s in spans] + [dict(s.resource.attributes)
                                                                 for s in spans])  # fmt: skip
    assert "not-in-spans" not in recorded


def test_an_endpoint_env_exports_otlp_http_protobuf_else_nothing() -> None:
    """OTLP/HTTP (OpenTelemetry protocol spec): binary protobuf POSTed to {endpoint}/v1/traces.
    The exporter variant is fixed, so a protocol the collector would not expect is refused
    rather than ignored (OTEL_EXPORTER_OTLP_PROTOCOL, SDK exporter configuration)."""
    assert tracing.exporter_from_env({}) is None
    with pytest.raises(ValueError, match="OTEL_EXPORTER_OTLP_PROTOCOL=grpc"):
        tracing.exporter_from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
                                   "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})  # fmt: skip


def test_sigterm_flushes_the_spans_to_the_collector_after_draining() -> None:
    """The trace SDK spec, "Shutdown": the provider's shutdown flushes its processors, so the
    BatchSpanProcessor's queued spans leave before the process exits. A fake collector on
    loopback receives them as OTLP/HTTP protobuf on /v1/traces."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    received: list[tuple[str, str, bytes]] = []

    class Collector(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.path, self.headers["Content-Type"], body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return None

    collector = ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    port = _free_port()
    env = {**os.environ, "PORT": str(port), "DRAIN_SECONDS": "0.5", "APP_COLOR": "blue",
           "APP_VERSION": "2.0.0", "APP_ENVIRONMENT": "staging",
           "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector.server_address[1]}",
           "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_BSP_SCHEDULE_DELAY": "60000",
           **RATIO_SAMPLER}  # fmt: skip
    app_file = str(ROOT / "app" / "analytics_api.py")
    process = subprocess.Popen([sys.executable, app_file], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    try:
        assert process.stdout is not None
        assert json.loads(process.stdout.readline())["listening"] == port
        assert _get(f"http://127.0.0.1:{port}/api/v1/status")[0] == 200
        assert received == []  # queued: the batch waits 60 s
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
        collector.shutdown()
    [(path, content_type, body)] = received
    assert (path, content_type) == ("/v1/traces", "application/x-protobuf")
    export = ExportTraceServiceRequest.FromString(body)
    [resource_spans] = export.resource_spans
    resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
    assert _service(resource) == {
        "service.name": "analytics-api",
        "service.version": "2.0.0",
        "deployment.environment.name": "staging",
        "deployment.color": "blue",
    }
    names = [s.name for scope in resource_spans.scope_spans for s in scope.spans]
    assert names == ["GET /api/v1/status"]


def test_probes_and_scrapes_without_a_trace_context_leave_no_trace(
    postgres: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kubernetes "Configure Liveness, Readiness and Startup Probes" (every periodSeconds, per
    pod), ALB target group health checks (every HealthCheckIntervalSeconds, per target) and
    Prometheus scrapes carry no trace context; X-Ray bills per trace recorded ("AWS X-Ray
    pricing"). At a sampling ratio of 1 they would be most of the traces, so a probe without a
    trace context records no span, and neither does the database check it starts. A request to
    the API itself is still traced."""
    provider = _traced(monkeypatch)
    base, _, server = _serve({**postgres, **FAST_CHECKS}, provider)
    try:
        assert _ready_within(base + "/health/ready", 10, "database reachable")[0] == 200
        assert _get(base + "/health/live")[0] == 200
        assert _get(base + "/metrics")[0] == 200
        time.sleep(0.5)  # a few more background checks
        assert provider.memory.get_finished_spans() == ()
        assert _get(base + "/api/v1/status")[0] == 200
        [request] = _spans(provider, "SERVER")
    finally:
        server.shutdown()
    assert request.name == "GET /api/v1/status"
    assert _spans(provider, "CLIENT", seconds=0) == []
