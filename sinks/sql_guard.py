"""What the SQL endpoint lets through. Pure: text in, verdict out; the store runs the
EXPLAINs whose output is judged here.

Everyone: one statement (a trailing `;` at most), read-only statements only, no `SETTINGS`
clause, no `INTO OUTFILE`, no functions that reach outside the store.

Tenant readers (a tenant admin's key) additionally: only `SELECT`/`WITH`; every table read
must be one of the store's tables with a `tenant_id` column (or `system.one` /
`system.settings`, which hold no tenant data and which clients such as clickhouse-connect
read when they connect); no table functions (`merge`, `file`, `url`, `remote`, `numbers`,
…); no identifier parameters. The query is checked twice: on its syntax tree before
anything runs (`EXPLAIN AST` executes nothing), then on the analyzer's query tree
(`EXPLAIN QUERY TREE`, which names every table actually read, through CTEs, views and
subqueries). The rows themselves are restricted by the engine: every query runs with
`additional_table_filters` naming each tenant table, so a read of any of them sees the
reader's tenant only, whatever the query says.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

READ_ONLY_STATEMENT = re.compile(
    r"^[\s(]*(SELECT|WITH|SHOW|DESCRIBE|DESC|EXPLAIN|EXISTS)\b", re.IGNORECASE
)
TENANT_STATEMENT = re.compile(r"^[\s(]*(SELECT|WITH)\b", re.IGNORECASE)
# Table functions and clauses that reach outside the store, refused for everyone (chDB
# runs inside the sink process: `file()` would read its disk). `system.settings` is a
# table, not a SETTINGS clause.
OUTSIDE_THE_STORE = re.compile(
    r"\b(file|url|s3|s3Cluster|hdfs|remote|remoteSecure|mysql|postgresql|sqlite|mongodb|"
    r"redis|jdbc|odbc|executable|input|azureBlobStorage|gcs|iceberg\w*|deltaLake\w*|"
    r"hudi\w*|python|cluster|clusterAllReplicas)\s*\(|\bINTO\s+OUTFILE\b|(?<!\.)\bSETTINGS\b",
    re.IGNORECASE,
)
IDENTIFIER_PARAMETER = re.compile(r"\{\s*\w+\s*:\s*Identifier\s*\}", re.IGNORECASE)
HEREDOC = re.compile(r"\$(\w*)\$")
# Tables without tenant data that a tenant reader may name.
NEUTRAL_TABLES = frozenset({"system.one", "system.settings"})
# `x IN system.tables` names a table as a plain identifier.
SYSTEM_IDENTIFIERS = ("identifier system.", "identifier information_schema.")
# Scalar functions that read something other than the rows of the tables named.
DENIED_FUNCTIONS = re.compile(r"^(file|dict\w*|joinGet\w*|getServerSetting|url)$", re.IGNORECASE)


class QueryRefusedError(Exception):
    """The query may not run for this reader; the message says why."""


def one_statement(sql: str) -> str:
    """The single statement in `sql`, without a trailing `;`. Quotes, heredocs and
    comments are skipped; anything but whitespace after a top-level `;` is refused."""
    i, n = 0, len(sql)
    end: int | None = None
    while i < n:
        ch = sql[i]
        if end is not None and not ch.isspace():
            raise QueryRefusedError("one statement per request")
        if ch in "'\"`":
            i = _after_quote(sql, i)
        elif sql.startswith("--", i) or ch == "#":
            newline = sql.find("\n", i)
            i = n if newline < 0 else newline + 1
        elif sql.startswith("/*", i):
            close = sql.find("*/", i + 2)
            if close < 0:
                raise QueryRefusedError("unterminated comment")
            i = close + 2
        elif ch == "$" and (heredoc := HEREDOC.match(sql, i)) is not None:
            close = sql.find(heredoc.group(0), heredoc.end())
            if close < 0:
                raise QueryRefusedError("unterminated heredoc")
            i = close + len(heredoc.group(0))
        elif ch == ";":
            end = i
            i += 1
        else:
            i += 1
    return sql if end is None else sql[:end]


def _after_quote(sql: str, start: int) -> int:
    quote, i = sql[start], start + 1
    while i < len(sql):
        if sql[i] == "\\":
            i += 2
        elif sql[i] == quote:
            if sql.startswith(quote * 2, i):
                i += 2
            else:
                return i + 1
        else:
            i += 1
    raise QueryRefusedError("unterminated quoted text")


def check_text(sql: str, *, tenant_reader: bool) -> None:
    """Checks on the statement's text, before the engine sees it."""
    pattern = TENANT_STATEMENT if tenant_reader else READ_ONLY_STATEMENT
    if not pattern.match(sql):
        allowed = "SELECT and WITH" if tenant_reader else "read-only statements"
        raise QueryRefusedError(f"only {allowed} are allowed")
    if OUTSIDE_THE_STORE.search(sql):
        raise QueryRefusedError("table functions, SETTINGS and INTO OUTFILE are not allowed here")
    if tenant_reader and IDENTIFIER_PARAMETER.search(sql):
        raise QueryRefusedError("identifier parameters are not allowed")


def check_syntax_tree(
    ast_lines: Iterable[str],
    *,
    database: str,
    tenant_tables: frozenset[str],
    existing: frozenset[str],
) -> None:
    """Checks on `EXPLAIN AST` output, for a tenant reader: no table functions, no table
    outside the tenant tables (an unqualified name that is no table of the database is a
    CTE, or an error later), no function that reads outside the rows."""
    previous = ""
    for raw in ast_lines:
        line = raw.strip()
        if previous.startswith("TableExpression") and line.startswith("Function "):
            raise QueryRefusedError("table functions are not allowed for tenant keys")
        if line.startswith("Function "):
            name = line.split(" ", 2)[1]
            if DENIED_FUNCTIONS.match(name):
                raise QueryRefusedError(f"function {name} is not allowed")
        if line.startswith("Identifier ") and line.lower().startswith(SYSTEM_IDENTIFIERS):
            raise QueryRefusedError("system tables are not readable with a tenant key")
        if line.startswith("TableIdentifier "):
            name = line.removeprefix("TableIdentifier ").split(" (alias ", 1)[0]
            if not _table_allowed(name, database, tenant_tables, existing):
                raise QueryRefusedError(f"table {name} is not readable with a tenant key")
        previous = line


def _table_allowed(
    name: str, database: str, tenant_tables: frozenset[str], existing: frozenset[str]
) -> bool:
    if name in NEUTRAL_TABLES:
        return True
    if "." not in name:
        return name in tenant_tables or name not in existing
    db, _, table = name.partition(".")
    return db == database and table in tenant_tables


def check_query_tree(
    tree_lines: Iterable[str], *, database: str, tenant_tables: frozenset[str]
) -> None:
    """Checks on `EXPLAIN QUERY TREE` output, for a tenant reader: every table read is a
    tenant table of the database (or a neutral one) and no table function runs."""
    for raw in tree_lines:
        line = raw.strip()
        if line.startswith("TABLE_FUNCTION"):
            raise QueryRefusedError("table functions are not allowed for tenant keys")
        for name in re.findall(r"function_name: (\w+)", line):
            if DENIED_FUNCTIONS.match(name):
                raise QueryRefusedError(f"function {name} is not allowed")
        if line.startswith("TABLE ") and "table_name: " in line:
            # The name comes after any alias on the line: an alias cannot hide it.
            name = line.rsplit("table_name: ", 1)[1].split(",", 1)[0].strip()
            if name in NEUTRAL_TABLES:
                continue
            db, _, table = name.partition(".")
            if db != database or table not in tenant_tables:
                raise QueryRefusedError(f"table {name} is not readable with a tenant key")


def tenant_filters(tables: Iterable[str], tenant_id: str) -> str:
    """The `additional_table_filters` value restricting each table to one tenant. The
    tenant id travels hex-encoded, so no tenant id can change the expression."""
    condition = f"tenant_id = unhex(\\'{tenant_id.encode().hex()}\\')"
    return "{" + ", ".join(f"'{table}': '{condition}'" for table in sorted(tables)) + "}"
