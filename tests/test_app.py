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


def _get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback only
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def _serve(env: dict[str, str]) -> tuple[str, App, Any]:
    app = App(Config.from_env({"APP_COLOR": "green", "APP_VERSION": "1.5.0",
                               "APP_ENVIRONMENT": "test", **env}))  # fmt: skip
    server = make_server(app, host="127.0.0.1", port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
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
