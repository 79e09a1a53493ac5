"""What the SQL endpoint lets through. Pure: text in, checked and re-rendered text out, or
`QueryRefusedError` saying why.

The text is parsed with sqlglot's ClickHouse dialect (errors raise; what it cannot read
is refused). It must be exactly one statement of an allowed kind (SELECT, or UNION /
INTERSECT / EXCEPT of them, with CTEs and subqueries). The whole tree is then walked
against allow-lists: node kinds, clauses, tables (`Policy`), functions
(`sinks.sql_functions`), query parameter types, output formats. No table function, no
`SETTINGS`, no `INTO OUTFILE`, no identifier parameters, for any reader. The statement
that runs is the one rendered from the checked tree (without comments, `FORMAT` moved
out), and the rendering must parse back to the same tree: what runs is what was checked.

`check_engine_ast` is a second line of defence on ClickHouse's own parse of the rendered
text (`EXPLAIN AST`, run only after the proof above, when the text is one statement): the
same function and table allow-lists, applied to what the engine will execute.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Iterable
from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.dialects.clickhouse import ClickHouse
from sqlglot.errors import ErrorLevel, SqlglotError
from sqlglot.generators.clickhouse import ClickHouseGenerator

from sinks.sql_functions import function_allowed


class Verbatim(ClickHouse):
    """ClickHouse as sqlglot reads it, but every plain function call stays a call of the
    name the user wrote (no translation to sqlglot's portable functions, which renders
    `toStartOfHour(t)` as `dateTrunc('HOUR', t)` and `hex(x)` as `HEX(x)`): what runs
    computes, and names its columns, as what was written."""

    class Parser(ClickHouse.Parser):  # type: ignore[misc,valid-type]
        FUNCTIONS: typing.ClassVar[dict[str, typing.Any]] = {}


DIALECT = Verbatim
MAX_SQL_BYTES = 64 * 1024
MAX_NODES = 20_000
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Output formats a reader may ask for (exact names; ClickHouse's are case-sensitive).
# Left out: formats that read schema or template files (Template, CustomSeparated with
# its settings, Protobuf, CapnProto), and input-only ones.
OUTPUT_FORMATS = _words(
    """
    TabSeparated TabSeparatedRaw TabSeparatedWithNames TabSeparatedWithNamesAndTypes
    TabSeparatedRawWithNames TabSeparatedRawWithNamesAndTypes TSV TSVRaw TSVWithNames
    TSVWithNamesAndTypes TSVRawWithNames TSVRawWithNamesAndTypes
    CSV CSVWithNames CSVWithNamesAndTypes
    JSON JSONStrings JSONCompact JSONCompactStrings JSONEachRow JSONStringsEachRow
    JSONCompactEachRow JSONCompactStringsEachRow JSONCompactEachRowWithNames
    JSONCompactEachRowWithNamesAndTypes JSONCompactStringsEachRowWithNames
    JSONCompactStringsEachRowWithNamesAndTypes JSONColumns JSONCompactColumns
    JSONLines NDJSON JSONObjectEachRow
    Parquet Arrow ArrowStream ORC Avro Native RowBinary RowBinaryWithNames
    RowBinaryWithNamesAndTypes Values Vertical Markdown XML
    Pretty PrettyCompact PrettyCompactMonoBlock PrettySpace PrettyNoEscapes
    PrettyCompactNoEscapes PrettySpaceNoEscapes PrettyMonoBlock
    """
)

# Types a query parameter `{name:Type}` may have (never Identifier: a parameter names a
# value, not a table or a column).
PARAMETER_TYPES = _words(
    """
    String FixedString UUID Bool Boolean Date Date32 DateTime DateTime64 Decimal Decimal32
    Decimal64 Decimal128 Int8 Int16 Int32 Int64 Int128 Int256 UInt8 UInt16 UInt32 UInt64
    UInt128 UInt256 Float32 Float64 Array Nullable LowCardinality Tuple Map
    """.lower()
)

# Tables outside our database that hold no tenant data. clickhouse-connect reads
# `system.settings` when it connects (the reader's own session: defaults plus the
# query's own settings, which name only the reader's tenant).
NEUTRAL_SYSTEM_TABLES = frozenset({("system", "one"), ("system", "settings")})
# Org readers may also see the schema. Not system.tables (file paths), not processes,
# logs, disks, users or server settings.
ORG_SYSTEM_TABLES = NEUTRAL_SYSTEM_TABLES | {("system", "columns")}

STATEMENTS = (exp.Select, exp.Union, exp.Intersect, exp.Except)
# Clauses a SELECT or a set operation may carry (sqlglot's argument names). Not:
# settings, into, locks, options, for_, connect, pivots, laterals, hint, kind,
# operation_modifiers, distribute/sort/cluster (other dialects) ...
QUERY_ARGS = frozenset(
    {
        "with_",
        "expressions",
        "distinct",
        "from_",
        "joins",
        "prewhere",
        "where",
        "group",
        "having",
        "qualify",
        "windows",
        "order",
        "limit",
        "offset",
        "sample",
        "exclude",
        # set operations
        "this",
        "expression",
        "by_name",
        "side",
        "kind",
        "on",
    }
)
TABLE_ARGS = frozenset({"this", "db", "alias", "sample", "final"})
JOIN_ARGS = frozenset({"this", "on", "side", "kind", "using", "global_", "method"})
# Node kinds that carry no name of a table or function (checked by kind); functions and
# tables are checked by name below.
STRUCTURE = (
    exp.Subquery,
    exp.With,
    exp.CTE,
    exp.TableAlias,
    exp.From,
    exp.Join,
    exp.Where,
    exp.PreWhere,
    exp.Group,
    exp.Having,
    exp.Qualify,
    exp.Order,
    exp.Ordered,
    exp.Limit,
    exp.Offset,
    exp.Window,
    exp.WindowSpec,
    exp.Distinct,
    exp.Identifier,
    exp.Column,
    exp.Star,
    exp.Alias,
    exp.Literal,
    exp.Boolean,
    exp.Null,
    exp.Paren,
    exp.Tuple,
    exp.Array,
    exp.Bracket,
    exp.DataType,
    exp.DataTypeParam,
    exp.Var,
    exp.Interval,
    exp.IntervalSpan,
    exp.Lambda,
    exp.Case,
    exp.Between,
    exp.Not,
    exp.Neg,
    exp.BitwiseNot,
    exp.Binary,  # arithmetic, comparison, AND/OR, LIKE, IS, IN's siblings, `.`
    exp.Placeholder,
    exp.TableSample,
    exp.Final,
    exp.WithFill,
    exp.JSONPath,
    exp.JSONPathPart,
    exp.Slice,
    exp.Kwarg,
    exp.Tuple,
)
# Binary nodes that are not plain operators over values.
REFUSED_BINARY = (exp.PropertyEQ,)


class QueryRefusedError(Exception):
    """The query may not run for this reader; the message says why."""


@dataclass(frozen=True, slots=True)
class Policy:
    """What one reader may name: tables of `database` (unqualified or qualified with it)
    and a few system tables."""

    database: str
    tables: frozenset[str]
    system_tables: frozenset[tuple[str, str]]

    @classmethod
    def for_reader(
        cls, database: str, tables: frozenset[str], tenant_tables: frozenset[str], *, org: bool
    ) -> Policy:
        """Org readers: every table of our database, the schema; tenant readers: only
        tables with a `tenant_id` column (each runs filtered to the tenant)."""
        if org:
            return cls(database, tables, ORG_SYSTEM_TABLES)
        return cls(database, tenant_tables, NEUTRAL_SYSTEM_TABLES)

    def table_allowed(self, db: str, name: str) -> bool:
        """Whether `db.name` (db empty: our database) may be read."""
        if db in ("", self.database):
            return name in self.tables
        return (db.lower(), name.lower()) in self.system_tables


@dataclass(frozen=True, slots=True)
class CheckedQuery:
    """A query proven to be one allowed read: the text to run (rendered from the checked
    tree, no FORMAT clause), the FORMAT it named (None: none), the names of its query
    parameters."""

    sql: str
    fmt: str | None
    parameters: frozenset[str]


class _RecordingGenerator(ClickHouseGenerator):
    """Renders ClickHouse text and records the name of every function it writes."""

    def __init__(self) -> None:
        super().__init__(
            comments=False,
            dialect=DIALECT,
            unsupported_level=ErrorLevel.RAISE,
            normalize_functions=False,
        )
        self.functions: list[str] = []

    def func(
        self,
        name: str,
        *args: object,
        prefix: str = "(",
        suffix: str = ")",
        normalize: bool = True,
    ) -> str:
        self.functions.append(self.normalize_func(name) if normalize else name)
        return super().func(name, *args, prefix=prefix, suffix=suffix, normalize=normalize)

    def if_sql(self, expression: exp.If) -> str:
        # `if(c, a, b)` stays a call of `if` (sqlglot writes CASE WHEN, which renames the
        # column an unaliased `if(...)` gives).
        false = expression.args.get("false")
        if false is None:
            return super().if_sql(expression)
        return self.func("if", expression.this, expression.args.get("true"), false)

    def placeholder_sql(self, expression: exp.Placeholder) -> str:
        # `{name:Type}` without a space: the form clients (clickhouse-connect) recognise
        # as a parameter the engine binds.
        return f"{{{expression.name}:{self.sql(expression, 'kind')}}}"


def check_format(name: str) -> str:
    """`name` if it is an allowed output format."""
    if name not in OUTPUT_FORMATS:
        raise QueryRefusedError(f"output format {name!r} is not allowed")
    return name


def check(sql: str, policy: Policy) -> CheckedQuery:
    """Prove `sql` is one allowed read for `policy`; return what to run."""
    if len(sql.encode()) > MAX_SQL_BYTES:
        raise QueryRefusedError(f"the query is longer than {MAX_SQL_BYTES} bytes")
    try:
        statements = sqlglot.parse(sql, read=DIALECT, error_level=ErrorLevel.RAISE)
    except SqlglotError as exc:
        reason = str(exc).split("\n", 1)[0][:200]
        raise QueryRefusedError(f"the query could not be parsed: {reason}") from None
    except RecursionError:
        raise QueryRefusedError("the query is nested too deeply") from None
    except (AttributeError, TypeError, ValueError, IndexError, KeyError) as exc:
        # The parser's own bug on text it should have refused (the fuzzer found one in
        # SET): whatever it could not handle, it did not prove to be one read.
        raise QueryRefusedError(f"the query could not be parsed ({type(exc).__name__})") from None
    if len(statements) != 1 or statements[0] is None:
        raise QueryRefusedError("one statement per request")
    tree = statements[0]
    if not isinstance(tree, STATEMENTS):
        raise QueryRefusedError(
            f"only SELECT queries are allowed (with UNION, INTERSECT, EXCEPT), not "
            f"{type(tree).__name__.upper()}"
        )
    fmt_node = tree.args.get("format")
    fmt = check_format(fmt_node.name) if isinstance(fmt_node, exp.Identifier) else None
    if fmt_node is not None and fmt is None:
        raise QueryRefusedError("FORMAT must name a format")
    tree.set("format", None)
    parameters = _check_tree(tree, policy)
    rendered, functions = _render(tree)
    for name in functions:
        if not NAME.match(name) or not function_allowed(name):
            raise QueryRefusedError(f"function {name} is not allowed")
    try:
        again = sqlglot.parse(rendered, read=DIALECT, error_level=ErrorLevel.RAISE)
    except SqlglotError:
        raise QueryRefusedError("the query does not survive re-rendering") from None
    # Rendering is a fixed point: the text parses back to a tree that renders the same,
    # and that tree (what the engine will read) passes the same checks.
    if len(again) != 1 or again[0] is None or _render(again[0])[0] != rendered:
        raise QueryRefusedError("the query does not survive re-rendering")
    if _check_tree(again[0], policy) != parameters:
        raise QueryRefusedError("the query does not survive re-rendering")
    return CheckedQuery(rendered, fmt, parameters)


def _render(tree: exp.Expr) -> tuple[str, list[str]]:
    generator = _RecordingGenerator()
    try:
        rendered = generator.generate(tree)
    except SqlglotError as exc:
        raise QueryRefusedError(f"the query cannot be rendered: {exc}") from None
    except RecursionError:
        raise QueryRefusedError("the query is nested too deeply") from None
    return rendered, generator.functions


def _check_tree(tree: exp.Expr, policy: Policy) -> frozenset[str]:
    parameters: set[str] = set()
    count = 0
    for node in tree.walk():
        count += 1
        if count > MAX_NODES:
            raise QueryRefusedError(f"the query has more than {MAX_NODES} parts")
        if isinstance(node, STATEMENTS):
            _check_args(node, QUERY_ARGS, "query")
        elif isinstance(node, exp.Table):
            _check_table(node, policy)
        elif isinstance(node, exp.Join):
            _check_args(node, JOIN_ARGS, "JOIN")
            _check_source(node)
        elif isinstance(node, exp.From):
            _check_source(node)
        elif isinstance(node, exp.In):
            _check_in(node)
        elif isinstance(node, exp.Placeholder):
            parameters.add(_check_parameter(node))
        elif isinstance(node, exp.Func):
            continue  # checked by name when rendered
        elif isinstance(node, REFUSED_BINARY) or not isinstance(node, STRUCTURE):
            raise QueryRefusedError(f"{type(node).__name__} is not allowed in a query")
    return frozenset(parameters)


def _check_in(node: exp.In) -> None:
    """`x IN t` and `x IN (t)` read the table (or set) named t, filters or not: only a
    list of values or a subquery may follow IN."""
    values = node.expressions
    only = values[0].unnest() if len(values) == 1 else None
    field = node.args.get("field")
    if (
        (field is not None and not isinstance(field, exp.Placeholder))
        or node.args.get("unnest") is not None
        or isinstance(only, exp.Column | exp.Dot | exp.Identifier | exp.Table)
    ):
        raise QueryRefusedError("IN takes a list of values or a subquery, not a table name")


def _check_source(node: exp.Expr) -> None:
    if isinstance(node, exp.Join) and str(node.args.get("kind") or "").upper() == "ARRAY":
        return  # ARRAY JOIN takes expressions (their functions are checked by name)
    source = node.this.this if isinstance(node.this, exp.Final) else node.this
    if not isinstance(source, exp.Table | exp.Subquery):
        raise QueryRefusedError("FROM and JOIN take a table or a subquery")


def _check_args(node: exp.Expr, allowed: frozenset[str], what: str) -> None:
    for key, value in node.args.items():
        if value not in (None, False, []) and key not in allowed:
            raise QueryRefusedError(f"{key.rstrip('_').upper()} is not allowed in a {what}")


def _check_table(table: exp.Table, policy: Policy) -> None:
    _check_args(table, TABLE_ARGS, "table reference")
    name = table.this
    if not isinstance(name, exp.Identifier):
        raise QueryRefusedError("table functions are not allowed")
    db = table.args.get("db")
    if db is not None and not isinstance(db, exp.Identifier):
        raise QueryRefusedError("a table's database must be a name")
    db_name = db.name if db is not None else ""
    if not db_name and _is_cte(table, name.name):
        return
    if not policy.table_allowed(db_name, name.name):
        shown = f"{db_name}.{name.name}" if db_name else name.name
        raise QueryRefusedError(f"table {shown} is not readable with this key")


def _is_cte(table: exp.Table, name: str) -> bool:
    """Whether `name` is a CTE of a query enclosing `table`."""
    node: exp.Expr | None = table.parent
    while node is not None:
        with_ = node.args.get("with_") if isinstance(node, STATEMENTS) else None
        if isinstance(with_, exp.With) and any(
            cte.alias == name for cte in with_.expressions if isinstance(cte, exp.CTE)
        ):
            return True
        node = node.parent
    return False


def _check_parameter(node: exp.Placeholder) -> str:
    name = node.this
    if not isinstance(name, exp.Var) or not NAME.match(name.name):
        raise QueryRefusedError("query parameters are written {name:Type}")
    kind = node.args.get("kind")
    if not isinstance(kind, exp.DataType):
        raise QueryRefusedError(f"query parameter {name.name} must have a value type")
    for part in kind.walk():
        if isinstance(part, exp.DataType) and (
            part.this.value.lower() not in PARAMETER_TYPES
            and part.sql(DIALECT).split("(", 1)[0].lower() not in PARAMETER_TYPES
        ):
            raise QueryRefusedError(f"query parameter type {kind.sql(DIALECT)} is not allowed")
    return name.name


# --- second line: ClickHouse's own parse of the rendered text --------------------------

AST_FUNCTION = re.compile(r"^Function (\S+)")
AST_TABLE = re.compile(r"^TableIdentifier (\S+)")


def check_engine_ast(lines: Iterable[str], policy: Policy, ctes: frozenset[str]) -> None:
    """Check ClickHouse's `EXPLAIN AST` of a rendered query: every function it will call
    is allowed, no table function, every table is one the policy (or a CTE) allows."""
    previous = ""
    for raw in lines:
        line = raw.strip()
        if previous.startswith("TableExpression") and line.startswith("Function "):
            raise QueryRefusedError("table functions are not allowed")
        if (found := AST_FUNCTION.match(line)) is not None and not function_allowed(found.group(1)):
            raise QueryRefusedError(f"function {found.group(1)} is not allowed")
        if (found := AST_TABLE.match(line)) is not None:
            db, _, name = found.group(1).rpartition(".")
            if not (not db and name in ctes) and not policy.table_allowed(db, name):
                raise QueryRefusedError(f"table {found.group(1)} is not readable with this key")
        previous = line


def cte_names(sql: str) -> frozenset[str]:
    """Names of every CTE in a (checked) query."""
    tree = sqlglot.parse_one(sql, read=DIALECT)
    return frozenset(cte.alias for cte in tree.find_all(exp.CTE))


def tenant_filters(tables: Iterable[str], tenant_id: str) -> str:
    """The `additional_table_filters` value restricting each table to one tenant. The
    tenant id travels hex-encoded, so no tenant id can change the expression."""
    condition = f"tenant_id = unhex(\\'{tenant_id.encode().hex()}\\')"
    return "{" + ", ".join(f"'{table}': '{condition}'" for table in sorted(tables)) + "}"
