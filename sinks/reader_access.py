"""ClickHouse server users for the SQL endpoint's readers, so that the engine itself holds
the line when the store is a ClickHouse server (compose): the guard (`sql_guard`) is the
first wall, these users the second.

- A settings profile `govledger_reader`: `readonly = 1`, DDL and introspection off,
  (CONST: a query cannot change them); the few settings the query API sets per query are
  changeable in readonly mode, nothing else is.
- An org reader user: SELECT on our database and on the three system tables the guard
  allows, nothing else (no table functions: they need grants it does not have, and
  `readonly = 1` refuses them).
- One user per tenant, made the first time that tenant reads: the same grants, plus a row
  policy on every tenant table `USING tenant_id = '<tenant>'`. Its rows are the tenant's
  whatever the query says, with no setting involved. Every other user keeps every row
  through a permissive policy `USING 1` for everyone but the tenant readers' role.

Pure: text out. `Store` runs it (as the DSN's user, which needs ACCESS MANAGEMENT) when
its DSN is a server; chDB has no users, so there the per-query filters and `readonly = 1`
in each query's own SETTINGS clause do this job."""

from __future__ import annotations

import re
from collections.abc import Iterable

PROFILE = "govledger_reader"
ORG_USER = "govledger_org_reader"
TENANT_ROLE = "govledger_tenant_reader"
TENANT_USER_PREFIX = "govledger_t_"
EVERYONE_POLICY = "govledger_every_row"
# Settings the query API sets on each query (`QueryApi.sql`, `Store.read_only`).
PER_QUERY_SETTINGS = (
    "max_result_rows",
    "result_overflow_mode",
    "max_execution_time",
    "output_format_write_statistics",
    "output_format_arrow_string_as_string",
)
READABLE_SYSTEM_TABLES = ("system.one", "system.settings", "system.columns")
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _name(value: str) -> str:
    if not NAME.match(value):
        raise ValueError(f"not a plain name: {value!r}")
    return value


def _string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def tenant_user(tenant_id: str) -> str:
    """The ClickHouse user of one tenant's readers (hex of the id: any id is a name)."""
    return TENANT_USER_PREFIX + tenant_id.encode().hex()


def shared_access_sql(
    database: str, tables: Iterable[str], tenant_tables: Iterable[str], org_password: str
) -> list[str]:
    """The profile, the tenant readers' role, the org reader (its password set now), and
    the permissive every-row policy for everyone else on each tenant table."""
    db = _name(database)
    changeable = ", ".join(f"{_name(s)} CHANGEABLE_IN_READONLY" for s in PER_QUERY_SETTINGS)
    statements = [
        f"CREATE SETTINGS PROFILE IF NOT EXISTS {PROFILE} SETTINGS readonly = 1 CONST, "
        f"allow_ddl = 0 CONST, allow_introspection_functions = 0 CONST, {changeable}",
        f"CREATE ROLE IF NOT EXISTS {TENANT_ROLE}",
        f"CREATE USER IF NOT EXISTS {ORG_USER} IDENTIFIED WITH sha256_password BY "
        f"{_string(org_password)} SETTINGS PROFILE {PROFILE}",
        f"ALTER USER {ORG_USER} IDENTIFIED WITH sha256_password BY {_string(org_password)}",
    ]
    statements += _grants(db, tables, READABLE_SYSTEM_TABLES, ORG_USER)
    statements += _grants(db, tenant_tables, READABLE_SYSTEM_TABLES[:2], TENANT_ROLE)
    statements += [
        f"CREATE ROW POLICY IF NOT EXISTS {EVERYONE_POLICY} ON {db}.{_name(table)} "
        f"AS PERMISSIVE FOR SELECT USING 1 TO ALL EXCEPT {TENANT_ROLE}"
        for table in sorted(tenant_tables)
    ]
    return statements


def _grants(
    db: str, tables: Iterable[str], system_tables: Iterable[str], grantee: str
) -> list[str]:
    granted = [f"{db}.{_name(table)}" for table in sorted(tables)] + list(system_tables)
    return [f"GRANT SELECT ON {target} TO {grantee}" for target in granted]


def tenant_access_sql(
    database: str, tenant_tables: Iterable[str], tenant_id: str, password: str
) -> list[str]:
    """One tenant's reader user (its password set now) with the tenant readers' role and
    a row policy on each tenant table that keeps the tenant's rows only. The tenant id
    travels hex-encoded: no id can change the statement."""
    db = _name(database)
    user = tenant_user(tenant_id)
    condition = f"tenant_id = unhex('{tenant_id.encode().hex()}')"
    statements = [
        f"CREATE USER IF NOT EXISTS {user} IDENTIFIED WITH sha256_password BY "
        f"{_string(password)} SETTINGS PROFILE {PROFILE} DEFAULT ROLE {TENANT_ROLE}",
        f"ALTER USER {user} IDENTIFIED WITH sha256_password BY {_string(password)}",
        f"GRANT {TENANT_ROLE} TO {user}",
        f"ALTER USER {user} DEFAULT ROLE {TENANT_ROLE}",
    ]
    statements += [
        f"CREATE ROW POLICY OR REPLACE {user} ON {db}.{_name(table)} AS PERMISSIVE "
        f"FOR SELECT USING {condition} TO {user}"
        for table in sorted(tenant_tables)
    ]
    return statements
