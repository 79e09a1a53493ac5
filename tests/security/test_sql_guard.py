"""The SQL guard on its own (pure, fast): every attack of the corpus is refused for every
reader, tenant readers are refused what only org readers may read, the legitimate
analytics pass for both, and a Hypothesis fuzzer that splices and mutates statements
never gets anything but one allowed read through."""

from __future__ import annotations

import logging

import pytest
import sqlglot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlglot import exp

from sinks import sql_guard
from sinks.sql_guard import Policy, QueryRefusedError
from tests.security import sql_corpus as corpus

TABLES = frozenset(
    [
        "lineage",
        "control_events",
        "wallet_state",
        "escalation_events",
        "dead_letters",
        "spend_daily",
        "spend_daily_mv",
        "provider_hourly",
        "sla_windows",
        "alerts",
        "breaker_state",
        "chain_checkpoints",
        "schema_migrations",
    ]
)
TENANT_TABLES = TABLES - {"schema_migrations"}
ORG = Policy.for_reader("default", TABLES, TENANT_TABLES, org=True)
TENANT = Policy.for_reader("default", TABLES, TENANT_TABLES, org=False)
FUZZ_EXAMPLES = 3000
fuzzed = {"examples": 0, "accepted": 0}

# sqlglot logs a warning for each statement it falls back to reading as a Command.
logging.getLogger("sqlglot").setLevel(logging.ERROR)


def _smuggled(sql: str) -> bool:
    """Whether a rendered query reads `lineage` or sets something: what a smuggled
    statement of the splitting corpus would do."""
    statements = sqlglot.parse(sql, read=sql_guard.DIALECT)
    tables = {t.name for s in statements if s is not None for t in s.find_all(exp.Table)}
    return len(statements) != 1 or "lineage" in tables


@pytest.mark.parametrize("policy", [ORG, TENANT], ids=["org", "tenant"])
@pytest.mark.parametrize("attack", corpus.REFUSED_FOR_ALL)
def test_attacks_are_refused_for_every_reader(attack: str, policy: Policy) -> None:
    query = attack.replace("{b}", "tenant-b")
    try:
        checked = sql_guard.check(query, policy)
    except QueryRefusedError:
        return
    # Only a splitting attempt whose `;` sits inside a comment or a string may pass, and
    # then what runs is the first statement alone.
    assert attack in corpus.SPLITTING, checked.sql
    assert not _smuggled(checked.sql), checked.sql


@pytest.mark.parametrize("attack", corpus.REFUSED_FOR_TENANTS)
def test_org_only_tables_are_refused_for_tenant_readers(attack: str) -> None:
    with pytest.raises(QueryRefusedError):
        sql_guard.check(attack, TENANT)
    sql_guard.check(attack, ORG)


@pytest.mark.parametrize("query", corpus.LEGIT)
def test_legitimate_analytics_pass_for_tenant_and_org(query: str) -> None:
    tenant = sql_guard.check(corpus.tenant_version(query), TENANT)
    org = sql_guard.check(corpus.org_version(query, "tenant-a"), ORG)
    assert tenant.fmt == org.fmt
    assert tenant.parameters == org.parameters


def test_the_issues_request_is_refused_before_anything_runs() -> None:
    with pytest.raises(QueryRefusedError, match="could not be parsed"):
        sql_guard.check(corpus.SPLITTING[0], TENANT)


def test_what_runs_is_the_rendering_without_comments_or_format() -> None:
    checked = sql_guard.check(
        "SELECT /* hi */ count() -- there\nFROM lineage FORMAT JSONEachRow", TENANT
    )
    assert checked.sql == "SELECT count() FROM lineage"
    assert checked.fmt == "JSONEachRow"


def test_parameters_are_named_with_value_types_only() -> None:
    checked = sql_guard.check(
        "SELECT {a:String}, {b:Array(UInt64)}, {c:DateTime64(3)}, {d:Nullable(Int64)}", TENANT
    )
    assert checked.parameters == {"a", "b", "c", "d"}
    for bad in ("SELECT {t:Identifier}", "SELECT 1 FROM {t:Identifier}", "SELECT ?"):
        with pytest.raises(QueryRefusedError):
            sql_guard.check(bad, ORG)


def test_formats_come_from_the_allow_list() -> None:
    assert sql_guard.check_format("JSONEachRow") == "JSONEachRow"
    for bad in ("Template", "json", "CustomSeparated", "Protobuf", "JSON; DROP"):
        with pytest.raises(QueryRefusedError):
            sql_guard.check_format(bad)


def test_engine_ast_check_refuses_what_the_engine_would_call() -> None:
    ast = ["SelectWithUnionQuery", " TablesInSelectQueryElement", "  TableExpression"]
    with pytest.raises(QueryRefusedError, match="table functions"):
        sql_guard.check_engine_ast([*ast, "   Function file (children 1)"], ORG, frozenset())
    with pytest.raises(QueryRefusedError, match="getSetting"):
        sql_guard.check_engine_ast(["Function getSetting (children 1)"], ORG, frozenset())
    with pytest.raises(QueryRefusedError, match=r"system\.tables"):
        sql_guard.check_engine_ast(["TableIdentifier system.tables"], ORG, frozenset())
    sql_guard.check_engine_ast(
        ["Function plus (children 1)", "TableIdentifier lineage", "TableIdentifier x"],
        TENANT,
        frozenset({"x"}),
    )


def test_deep_nesting_and_huge_queries_are_refused_not_crashed() -> None:
    for query in (
        "SELECT " + "(" * 5000 + "1" + ")" * 5000,
        "SELECT " + " - ".join(["1"] * 30_000),
        "SELECT '" + "x" * (sql_guard.MAX_SQL_BYTES + 1) + "'",
    ):
        with pytest.raises(QueryRefusedError):
            sql_guard.check(query, ORG)


# --- fuzzer ---------------------------------------------------------------------------

PIECES = [
    "SELECT tenant_id FROM lineage",
    "SELECT 1",
    "WITH x AS (SELECT 1) SELECT * FROM x",
    *corpus.LEGIT[:6],
    *corpus.WRITES_AND_DDL[:12],
    *corpus.TABLE_FUNCTIONS[:12],
    *corpus.SETTINGS_AND_SESSION[:8],
]
GLUE = [
    ";",
    "; ",
    "\uff1b",
    "\u037e",
    " -- ",
    "\n",
    " # ",
    "/*",
    "*/",
    "/* ; */",
    "'",
    "''",
    '"',
    "`",
    "\\",
    "$b$",
    "$$",
    "a$b$",
    " UNION ALL ",
    " SETTINGS readonly = 0",
    " FORMAT JSON",
    " INTO OUTFILE '/tmp/x'",
    "(",
    ")",
    ",",
    " file(",
    " url(",
    "{x:Identifier}",
    "\x00",
    " FROM system.tables",
    " FROM numbers(3)",
    " AS `a;b`",
    " WHERE 1",
]


@st.composite
def spliced(draw: st.DrawFn) -> str:
    parts = draw(st.lists(st.sampled_from(PIECES + GLUE), min_size=1, max_size=7))
    text = "".join(parts)
    if draw(st.booleans()) and text:
        # Mutate: cut, duplicate or replace one character.
        at = draw(st.integers(0, len(text) - 1))
        kind = draw(st.sampled_from(["cut", "dup", "swap"]))
        if kind == "cut":
            text = text[:at] + text[at + 1 :]
        elif kind == "dup":
            text = text[:at] + text[at] + text[at:]
        else:
            text = text[:at] + draw(st.sampled_from(";'\"`$/*-#\\ (){}")) + text[at + 1 :]
    return text


@settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
@given(text=spliced(), org=st.booleans())
def test_fuzzed_statements_are_refused_or_one_allowed_read(text: str, org: bool) -> None:
    fuzzed["examples"] += 1
    policy = ORG if org else TENANT
    try:
        checked = sql_guard.check(text, policy)
    except QueryRefusedError:
        return
    fuzzed["accepted"] += 1
    (tree,) = sqlglot.parse(checked.sql, read=sql_guard.DIALECT)
    assert isinstance(tree, sql_guard.STATEMENTS)
    # What runs passes the same check again, unchanged: one statement, allowed tables,
    # allowed functions, no SETTINGS, no table function.
    again = sql_guard.check(checked.sql, policy)
    assert again.sql == checked.sql
    for table in tree.find_all(exp.Table):
        assert isinstance(table.this, exp.Identifier)
    assert tree.args.get("settings") is None


def test_zz_report_corpus_size_and_fuzzer_examples(capsys: pytest.CaptureFixture[str]) -> None:
    attacks = len(corpus.REFUSED_FOR_ALL) + len(corpus.REFUSED_FOR_TENANTS)
    with capsys.disabled():
        print(
            f"\nSQL security corpus: {attacks} attacks ({len(corpus.REFUSED_FOR_ALL)} refused "
            f"for every reader, {len(corpus.REFUSED_FOR_TENANTS)} for tenants), "
            f"{len(corpus.CROSSING)} crossing attempts, {len(corpus.LEGIT)} legitimate "
            f"queries; fuzzer: {fuzzed['examples']} examples ({fuzzed['accepted']} accepted)"
        )
    # The corpus only grows.
    assert attacks >= 200 and len(corpus.LEGIT) >= 50
