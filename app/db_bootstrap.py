"""Creates the services' PostgreSQL roles: the deploy's idempotent bootstrap Job runs this.

    DB_HOST, DB_PORT, DB_NAME, DB_SSLMODE   where the database is
    APP_DB_USERS                            comma-separated roles to create, e.g. analytics_api
    MASTER_SECRET_ARN, AWS_REGION           the RDS-managed master secret, read at run time

Only this Job reads the master secret, with its own Pod Identity role; the password is never in
its environment, its logs or Kubernetes. Each role logs in only with an RDS IAM token (`rds_iam`)
and may read and write the tables of the public schema, nothing more: no DDL, no other roles.
Every statement is safe to run again, so the Job is re-run whenever its spec changes.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

ROLE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
# What a service may do in its database: data, not schema.
TABLE_PRIVILEGES = "SELECT, INSERT, UPDATE, DELETE"
SEQUENCE_PRIVILEGES = "USAGE, SELECT"


def role_statements(role: str, database: str) -> list[Any]:
    """Idempotent statements that give `role` IAM login and least privilege."""
    from psycopg import sql

    if not ROLE_NAME.match(role):
        raise ValueError(f"role {role!r}: allowed: lowercase letters, digits and _")
    name, db = sql.Identifier(role), sql.Identifier(database)
    return [
        sql.SQL(
            "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {}) THEN "
            "CREATE ROLE {} LOGIN; END IF; END $$"
        ).format(sql.Literal(role), name),
        # No password at all: IAM tokens only. SUPERUSER, REPLICATION and BYPASSRLS are off
        # from CREATE ROLE and only a superuser may name them, which RDS's master user is not.
        sql.SQL("ALTER ROLE {} LOGIN PASSWORD NULL NOCREATEDB NOCREATEROLE").format(name),
        sql.SQL("GRANT rds_iam TO {}").format(name),
        sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(db, name),
        sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(name),
        sql.SQL(f"GRANT {TABLE_PRIVILEGES} ON ALL TABLES IN SCHEMA public TO {{}}").format(name),
        sql.SQL(f"GRANT {SEQUENCE_PRIVILEGES} ON ALL SEQUENCES IN SCHEMA public TO {{}}").format(
            name
        ),
        # Tables the owner (the master user, running migrations) creates later.
        sql.SQL(
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT {TABLE_PRIVILEGES} ON TABLES TO {{}}"
        ).format(name),
        sql.SQL(
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT {SEQUENCE_PRIVILEGES} "
            "ON SEQUENCES TO {}"
        ).format(name),
    ]


def bootstrap(connect: Callable[[], Any], roles: Sequence[str], database: str) -> None:
    """Runs every role's statements in one transaction: all roles, or none."""
    with connect() as connection, connection.transaction():
        for role in roles:
            for statement in role_statements(role, database):
                connection.execute(statement)


def master_credentials(secret_arn: str, region: str) -> tuple[str, str]:
    """The RDS-managed master secret, read now: RDS rotates it, so no copy is kept anywhere."""
    import boto3

    client = boto3.client("secretsmanager", region_name=region)
    secret = json.loads(client.get_secret_value(SecretId=secret_arn)["SecretString"])
    return str(secret["username"]), str(secret["password"])


def main(env: Mapping[str, str]) -> int:
    import psycopg

    roles = [r.strip() for r in env["APP_DB_USERS"].split(",") if r.strip()]
    user, password = master_credentials(env["MASTER_SECRET_ARN"], env["AWS_REGION"])

    def connect() -> Any:
        return psycopg.connect(
            host=env["DB_HOST"],
            port=int(env.get("DB_PORT", "5432")),
            dbname=env["DB_NAME"],
            user=user,
            password=password,
            sslmode=env.get("DB_SSLMODE", "require"),
            connect_timeout=10,
        )

    bootstrap(connect, roles, env["DB_NAME"])
    print(json.dumps({"level": "info", "event": "roles ready", "roles": roles}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(os.environ))
