"""Corpora for the SQL endpoint: attacks that must be refused for every reader, attacks a
tenant reader must be refused (an org reader may run them), and legitimate analytics that
must run for a tenant admin with the same rows as the org's, filtered to the tenant.

`{b}` stands for the other tenant's id. Grow these lists: each entry is one test case."""

from __future__ import annotations

SMUGGLED = "SELECT tenant_id, count() FROM lineage GROUP BY 1"

# Statement splitting: every quoting and comment form around a `;` (issue 11, finding 1).
SPLITTING = [
    # The exact request: `$b$` inside identifiers read as a heredoc.
    f"SELECT 1 AS a$b$; SET additional_table_filters = {{}}; {SMUGGLED}; SELECT 2 AS c$b$",
    f"SELECT 1; {SMUGGLED}",
    f"SELECT 1;{SMUGGLED};",
    f"SELECT 1 ; ; {SMUGGLED}",
    f"SELECT 1;\n{SMUGGLED}",
    f"SELECT 1 -- x\n; {SMUGGLED}",
    f"SELECT 1 -- x */; {SMUGGLED}",
    f"SELECT 1 # x\n; {SMUGGLED}",
    f"SELECT 1 /* ; */ ; {SMUGGLED}",
    f"SELECT 1 /* a /* nested */ ; */ ; {SMUGGLED}",
    f"SELECT 1 /* unterminated ; {SMUGGLED}",
    f"SELECT '; ' ; {SMUGGLED}",
    f"SELECT 'it''s' ; {SMUGGLED}",
    f"SELECT 'a\\' ; {SMUGGLED}; --'",
    f'SELECT "a;" ; {SMUGGLED}',
    f"SELECT `a;` ; {SMUGGLED}",
    f"SELECT `a\\`` ; {SMUGGLED}",
    f"SELECT $$ ' $$; {SMUGGLED}; -- '",
    f"SELECT $x$ ; $x$ ; {SMUGGLED}",
    f"SELECT $x$ $y$ ; $x$ ; {SMUGGLED}; SELECT $y$",
    f"SELECT 1 AS $b$; {SMUGGLED}; SELECT $b$",
    f"SELECT a$b$c; {SMUGGLED}; SELECT $b$",
    f"SELECT 1\uff1b {SMUGGLED}",  # fullwidth semicolon
    f"SELECT 1\u037e {SMUGGLED}",  # Greek question mark, looks like `;`
    f"SELECT 1\ufe54 {SMUGGLED}",  # small semicolon
    f"SELECT 1\u2028; {SMUGGLED}",  # line separator
    f"SELECT 1\x00; {SMUGGLED}",
    f"SELECT 1 \\; {SMUGGLED}",
    f"SELECT 1 {{x:String}}; {SMUGGLED}",
    f"EXPLAIN AST SELECT 1; {SMUGGLED}",
    f"(SELECT 1); {SMUGGLED}",
    f"WITH x AS (SELECT 1) SELECT * FROM x; {SMUGGLED}",
    f"SELECT 1 UNION ALL SELECT 2; {SMUGGLED}",
]

SETTINGS_AND_SESSION = [
    "SET additional_table_filters = {}",
    "SET readonly = 1",
    "SET readonly = 0",
    "SET max_result_rows = 0",
    # Found by the fuzzer: sqlglot's SET parser raised AttributeError, not a parse error.
    "SET readonl{ = 1",
    "SET x[1 = 1] = 1",
    "SELECT tenant_id FROM lineage SETTINGS additional_table_filters = {}",
    "SELECT tenant_id FROM lineage SETTINGS readonly = 0",
    "SELECT tenant_id FROM lineage SETTINGS readonly = 1",
    "SELECT tenant_id FROM lineage SETTINGS/**/additional_table_filters = {}",
    "SELECT tenant_id FROM (SELECT tenant_id FROM lineage SETTINGS readonly = 0)",
    "SELECT tenant_id FROM lineage FORMAT JSON SETTINGS readonly = 0",
    "SELECT getSetting('additional_table_filters')",
    "SELECT getSetting('readonly')",
    "SELECT getServerSetting('path')",
    "SELECT * FROM system.settings SETTINGS readonly = 0",
    "USE system",
    "SELECT 1 FROM {t:Identifier}",
    "SELECT {c:Identifier} FROM lineage",
    "SELECT ? FROM lineage",
    "SELECT tenant_id FROM lineage WHERE tenant_id = {t:Identifier}",
]

SYSTEM_TABLES = [
    "SELECT name FROM system.tables",
    "SELECT * FROM system.tables",
    "SELECT * FROM system.databases",
    "SELECT * FROM system.query_log",
    "SELECT * FROM system.processes",
    "SELECT * FROM system.parts",
    "SELECT * FROM system.disks",
    "SELECT * FROM system.users",
    "SELECT * FROM system.server_settings",
    "SELECT * FROM system.numbers LIMIT 1",
    "SELECT * FROM system.dictionaries",
    "SELECT * FROM `system`.`tables`",
    'SELECT * FROM "system"."tables"',
    "SELECT * FROM SYSTEM.TABLES",
    "SELECT * FROM INFORMATION_SCHEMA.TABLES",
    "SELECT * FROM information_schema.columns",
    "SELECT 1 WHERE 'x' IN system.tables",
    "SELECT 1 WHERE tenant_id IN lineage",
    # `IN (name)` reads a table: an oracle on system tables ("43 columns at right").
    "SELECT 'x' IN (system.tables)",
    "SELECT 'x' IN ((system.tables))",
    "SELECT 'x' GLOBAL NOT IN (system.tables)",
    "SELECT 1 FROM lineage WHERE (tenant_id) IN (system.tables)",
    "SELECT ('a', 'b') IN (system.databases)",
    "SELECT tenant_id IN (lineage) FROM lineage",
    "SELECT * FROM otherdb.lineage",
    "SELECT * FROM catalog.default.lineage",
]

NOT_SELECT = [
    "SHOW TABLES",
    "SHOW DATABASES",
    "SHOW CREATE TABLE lineage",
    "SHOW GRANTS",
    "SHOW PROCESSLIST",
    "DESCRIBE TABLE lineage",
    "DESC lineage",
    "EXPLAIN SELECT * FROM lineage",
    "EXPLAIN AST SELECT 1",
    "EXISTS TABLE lineage",
    "CHECK TABLE lineage",
    "WATCH lineage",
]

TABLE_FUNCTIONS = [
    "SELECT * FROM file('/etc/passwd', 'LineAsString')",
    "SELECT * FROM file/**/('/etc/passwd', 'LineAsString')",
    "SELECT * FROM file\n('/etc/passwd', 'LineAsString')",
    "SELECT * FROM FILE('/etc/passwd', 'LineAsString')",
    "SELECT * FROM `file`('/etc/passwd', 'LineAsString')",
    "SELECT file('/etc/passwd')",
    "SELECT file/**/('/etc/passwd')",
    "SELECT * FROM url('http://127.0.0.1:1/', CSV)",
    "SELECT * FROM url/**/('http://127.0.0.1:1/', 'LineAsString')",
    "SELECT * FROM urlCluster('default', 'http://127.0.0.1:1/')",
    "SELECT * FROM remote('127.0.0.1', default.lineage)",
    "SELECT * FROM remoteSecure('127.0.0.1', default.lineage)",
    "SELECT * FROM s3('http://127.0.0.1:1/x', CSV)",
    "SELECT * FROM s3Cluster('c', 'http://127.0.0.1:1/x')",
    "SELECT * FROM hdfs('hdfs://x/y', CSV)",
    "SELECT * FROM numbers(10)",
    "SELECT * FROM numbers_mt(10)",
    "SELECT * FROM zeros(10)",
    "SELECT * FROM generateRandom('a String')",
    "SELECT tenant_id FROM merge('default', '^lineage$')",
    "SELECT tenant_id FROM merge(currentDatabase(), 'lineage')",
    "SELECT * FROM cluster('default', default.lineage)",
    "SELECT * FROM clusterAllReplicas('default', default.lineage)",
    "SELECT * FROM input('x String')",
    "SELECT * FROM executable('id', 'TSV', 'x String')",
    "SELECT * FROM mysql('h:3306', 'db', 't', 'u', 'p')",
    "SELECT * FROM postgresql('h:5432', 'db', 't', 'u', 'p')",
    "SELECT * FROM jdbc('x', 'y')",
    "SELECT * FROM odbc('x', 'y')",
    "SELECT * FROM sqlite('/etc/x.db', 't')",
    "SELECT * FROM view(SELECT tenant_id FROM lineage)",
    "SELECT * FROM values('x String', 'a')",
    "SELECT * FROM format(CSV, 'a')",
    "SELECT * FROM dictionary('d')",
    "SELECT * FROM python('x')",
    "SELECT * FROM lineage AS l JOIN file('/etc/passwd', 'LineAsString') AS f ON 1",
    "SELECT (SELECT * FROM file('/etc/passwd', 'LineAsString'))",
    "WITH f AS (SELECT * FROM file('/etc/passwd', 'LineAsString')) SELECT * FROM f",
    "SELECT 1 WHERE 1 IN (SELECT * FROM url('http://127.0.0.1:1/', 'LineAsString'))",
]

OUTSIDE_FUNCTIONS = [
    "SELECT dictGet('x', 'y', 1)",
    "SELECT dictGetString('x', 'y', 1)",
    "SELECT dictHas('x', 1)",
    "SELECT joinGet('lineage', 'tenant_id', 1)",
    "SELECT currentUser()",
    "SELECT hostName()",
    "SELECT currentDatabase()",
    "SELECT uptime()",
    "SELECT filesystemAvailable()",
    "SELECT getMacro('x')",
    "SELECT sleep(3)",
    "SELECT throwIf(1)",
    "SELECT globalVariable('x')",
    "SELECT transactionID()",
    "SELECT initializeAggregation('sumState', 1)",
    "SELECT arrayMap(x -> file('/etc/passwd'), [1])",
    "SELECT sumIf(file('/etc/passwd'), 1)",
    "SELECT count() FROM lineage WHERE tenant_id = dictGet('d', 'a', 1)",
    "SELECT 1 /* sqlglot.anonymous */ + file('/etc/passwd')",
    "SELECT file /* sqlglot.anonymous */ ('/etc/passwd')",
    "SELECT x.file('/etc/passwd')",
]

OUTFILE_AND_FORMATS = [
    "SELECT tenant_id FROM lineage INTO OUTFILE '/tmp/leak.tsv'",
    "SELECT tenant_id FROM lineage INTO/**/OUTFILE '/tmp/leak.tsv'",
    "SELECT tenant_id FROM lineage INTO OUTFILE '/tmp/leak.tsv' FORMAT CSV",
    "SELECT tenant_id FROM lineage INTO OUTFILE '/tmp/x' TRUNCATE",
    "SELECT 1 FORMAT Template",
    "SELECT 1 FORMAT CustomSeparated",
    "SELECT 1 FORMAT Protobuf",
    "SELECT 1 FORMAT CapnProto",
    "SELECT 1 FORMAT Regexp",
    "SELECT 1 FORMAT `JSON; DROP TABLE lineage`",
    "SELECT 1 FORMAT JSON FORMAT CSV",
    "SELECT 1 FORMAT json",
]

WRITES_AND_DDL = [
    "INSERT INTO lineage (tenant_id) VALUES ('x')",
    "INSERT INTO lineage SELECT * FROM lineage",
    "INSERT INTO FUNCTION file('/tmp/x', 'CSV') SELECT 1",
    "CREATE TABLE x (a Int8) ENGINE = Memory",
    "CREATE TEMPORARY TABLE x (a Int8)",
    "CREATE VIEW v AS SELECT * FROM lineage",
    "CREATE DICTIONARY d (a UInt64) PRIMARY KEY a SOURCE(FILE(path '/etc/passwd' format 'TSV'))",
    "CREATE USER x",
    "CREATE ROW POLICY p ON lineage USING 1 TO ALL",
    "ALTER TABLE lineage DELETE WHERE 1",
    "ALTER TABLE lineage UPDATE cost_nanousd = 1 WHERE 1",
    "ALTER TABLE lineage DROP COLUMN raw",
    "ALTER TABLE lineage MODIFY TTL occurred_at",
    "DELETE FROM lineage WHERE 1",
    "UPDATE lineage SET cost_nanousd = 1 WHERE 1",
    "DROP TABLE lineage",
    "DROP TABLE IF EXISTS lineage",
    "DROP DATABASE default",
    "TRUNCATE TABLE lineage",
    "TRUNCATE lineage",
    "OPTIMIZE TABLE lineage FINAL",
    "KILL QUERY WHERE 1",
    "KILL MUTATION WHERE 1",
    "SYSTEM STOP MERGES",
    "SYSTEM SHUTDOWN",
    "SYSTEM DROP MARK CACHE",
    "RENAME TABLE lineage TO x",
    "EXCHANGE TABLES lineage AND alerts",
    "ATTACH TABLE x",
    "DETACH TABLE lineage",
    "GRANT ALL ON *.* TO default",
    "REVOKE SELECT ON lineage FROM default",
    "BACKUP TABLE lineage TO File('/tmp/x')",
    "RESTORE TABLE lineage FROM File('/tmp/x')",
    "UNDROP TABLE lineage",
    "MOVE USER default TO local_directory",
    "BEGIN TRANSACTION",
    "COMMIT",
    "WITH x AS (SELECT 1) INSERT INTO lineage SELECT * FROM x",
]

# Refused for every reader, the admin token included.
REFUSED_FOR_ALL = (
    SPLITTING
    + SETTINGS_AND_SESSION
    + SYSTEM_TABLES
    + NOT_SELECT
    + TABLE_FUNCTIONS
    + OUTSIDE_FUNCTIONS
    + OUTFILE_AND_FORMATS
    + WRITES_AND_DDL
)

# Org readers may read these (our schema); tenant readers may not.
REFUSED_FOR_TENANTS = [
    "SELECT * FROM default.schema_migrations",
    "SELECT * FROM schema_migrations",
    "SELECT database, table, name FROM system.columns",
    "SELECT * FROM lineage AS l JOIN schema_migrations AS m ON 1",
    "WITH m AS (SELECT * FROM schema_migrations) SELECT * FROM m",
    "WITH lineage AS (SELECT * FROM schema_migrations) SELECT * FROM lineage",
]

# Tenant readers may read only tenant tables; these must return the reader's rows only
# (refused is fine too): the engine filters every tenant table read, wherever it is.
CROSSING = [
    "SELECT tenant_id, team_id FROM lineage",
    "SELECT tenant_id, team_id FROM lineage WHERE tenant_id = '{b}'",
    "SELECT tenant_id, team_id FROM lineage WHERE tenant_id != ''",
    "SELECT tenant_id, team_id FROM default.lineage",
    "SELECT tenant_id, team_id FROM lineage FINAL",
    "SELECT tenant_id FROM lineage UNION ALL SELECT tenant_id FROM wallet_state",
    "SELECT tenant_id FROM lineage INTERSECT SELECT tenant_id FROM lineage",
    "SELECT tenant_id FROM lineage EXCEPT SELECT 'nobody'",
    "SELECT * FROM (SELECT tenant_id FROM lineage WHERE tenant_id = '{b}')",
    "SELECT l.tenant_id, w.tenant_id FROM lineage AS l JOIN wallet_state AS w ON 1",
    "SELECT l.tenant_id, w.tenant_id FROM lineage AS l FULL OUTER JOIN lineage AS w ON 0",
    "SELECT l.tenant_id FROM lineage AS l GLOBAL JOIN lineage AS m USING (event_id)",
    "SELECT l.tenant_id FROM lineage AS l CROSS JOIN control_events AS c",
    "SELECT l.tenant_id FROM lineage AS l ASOF LEFT JOIN lineage AS m "
    "ON l.tenant_id = m.tenant_id AND l.occurred_at >= m.occurred_at",
    "WITH x AS (SELECT tenant_id FROM lineage) SELECT * FROM x",
    "WITH x AS (SELECT tenant_id FROM lineage), y AS (SELECT * FROM x) SELECT * FROM y",
    "WITH (SELECT groupArray(tenant_id) FROM lineage) AS t SELECT t",
    "SELECT (SELECT groupArray(tenant_id) FROM lineage), 1",
    "SELECT tenant_id FROM lineage WHERE tenant_id IN (SELECT tenant_id FROM wallet_state)",
    "SELECT count(), '{b}' IN (SELECT tenant_id FROM lineage) FROM system.one",
    "SELECT EXISTS (SELECT 1 FROM lineage WHERE tenant_id = '{b}')",
    "SELECT tenant_id, team_id FROM spend_daily",
    "SELECT tenant_id, team_id FROM spend_daily FINAL",
    "SELECT tenant_id, provider FROM provider_hourly FINAL",
    "SELECT tenant_id, team_id FROM control_events",
    "SELECT tenant_id, wallet_id FROM wallet_state",
    "SELECT tenant_id FROM escalation_events",
    "SELECT tenant_id FROM sla_windows",
    "SELECT tenant_id FROM alerts",
    "SELECT tenant_id FROM breaker_state",
    "SELECT tenant_id FROM dead_letters",
    "SELECT tenant_id FROM chain_checkpoints",
    "SELECT tenant_id, team_id FROM lineage AS `x, table_name: default.lineage`",
    "SELECT tenant_id FROM lineage -- ' OR 1",
    "SELECT tenant_id FROM lineage # comment",
    "SELECT tenant_id FROM lineage /* */ WHERE 1",
    "SELECT tenant_id FROM lineage FORMAT JSONEachRow",
    "SELECT tenant_id FROM lineage FORMAT TSVWithNames;",
    "SELECT groupArray(tenant_id) OVER () FROM lineage",
    "SELECT arrayJoin([tenant_id, 'x']) FROM lineage",
    "SELECT tenant_id FROM lineage ARRAY JOIN [1, 2] AS x",
    "SELECT tenant_id FROM lineage LIMIT 1 BY tenant_id",
    "SELECT tenant_id FROM lineage SAMPLE 1",
    "SELECT tenant_id FROM lineage PREWHERE tenant_id != ''",
    "SELECT * FROM lineage AS l WHERE l.tenant_id IN (SELECT DISTINCT tenant_id FROM lineage)",
    "SELECT name, value FROM system.settings WHERE name = 'additional_table_filters'",
]

# Legitimate analytics. `{t}` marks where the org's version filters to the tenant
# (`tenant_id = '<a>'`; `{t.l}` with a table alias); the tenant's version has `1` there
# and relies on the engine's filter. Every query in the README and docs/query-api.md,
# the demo's report queries, and analytics of every kind the issue names.
LEGIT = [
    # README and docs/query-api.md
    "SELECT team_id, model_requested, count() AS calls, sum(cost_nanousd) / 1e9 AS usd "
    "FROM lineage WHERE {t} GROUP BY team_id, model_requested ORDER BY usd DESC",
    "SELECT count() FROM lineage WHERE {t}",
    "SELECT team_id, sum(cost_nanousd) FROM lineage WHERE {t} GROUP BY team_id ORDER BY 1",
    "SELECT model, sum(calls) FROM spend_daily WHERE day >= today() - 7 AND {t} "
    "GROUP BY model ORDER BY model",
    # the demo's report (govledger/demo/store.py `look`)
    "SELECT team_id AS team, model_requested AS requested, "
    "if(http_status = 200, concat(provider, '/', model_selected), '-') AS served, "
    "count() AS calls, countIf(http_status = 200) AS ok, "
    "countIf(decision = 'rejected') AS refused, sum(cost_nanousd) AS cost "
    "FROM lineage WHERE {t} AND has(splitByChar(',', {keys:String}), key_id) "
    "GROUP BY team, requested, served ORDER BY team, requested, served",
    "SELECT team_id AS team, tupleElement(g, 1) AS step, tupleElement(g, 2) AS action, "
    "count() AS calls FROM lineage ARRAY JOIN guardrails_triggered AS g "
    "WHERE {t} GROUP BY team, step, action ORDER BY team, step, action",
    "SELECT selection_reason AS reason, concat(provider, '/', model_selected) AS served, "
    "count() AS calls, sum(arrayCount(a -> tupleElement(a, 2) = {model:String} "
    "AND tupleElement(a, 3) >= 500, attempts)) AS failed, "
    "sum(arrayCount(a -> tupleElement(a, 5) = 'breaker_open', attempts)) AS skipped "
    "FROM lineage WHERE {t} GROUP BY reason, served ORDER BY reason, served",
    "SELECT event_type, before, after, toUnixTimestamp64Milli(coalesce(at, occurred_at)) "
    "AS at_ms FROM alerts WHERE {t} AND event_type IN ('circuit.opened', 'circuit.closed') "
    "ORDER BY at_ms",
    "SELECT threshold_percent AS threshold, count() AS alerts, min(spent_nanousd) AS spent, "
    "max(budget_nanousd) AS budget, toUnixTimestamp64Milli(min(occurred_at)) AS at_ms "
    "FROM alerts WHERE event_type = 'quota.threshold' AND {t} GROUP BY threshold "
    "ORDER BY threshold",
    "SELECT wallet_id, sum(cost_nanousd) AS spent FROM lineage WHERE {t} "
    "GROUP BY wallet_id ORDER BY wallet_id",
    "SELECT wallet_id, sum(amount_nanousd) AS funded FROM control_events "
    "WHERE {t} AND event_type = 'wallet.funded' GROUP BY wallet_id ORDER BY wallet_id",
    "SELECT model_selected, http_status FROM lineage WHERE {t} AND trace_id = {trace:String}",
    # parametric aggregates and combinators
    "SELECT quantiles(0.5, 0.99)(latency_ms) FROM lineage WHERE {t}",
    "SELECT quantile(0.9)(latency_ms), quantileExact(0.5)(prompt_tokens), "
    "quantileTDigestIf(0.5)(latency_ms, http_status = 200) FROM lineage WHERE {t}",
    "SELECT topK(3)(model_requested), uniqExact(team_id), uniq(key_id), "
    "argMax(model_requested, occurred_at), groupArray(3)(http_status) FROM lineage WHERE {t}",
    "SELECT sumIf(cost_nanousd, http_status = 200), avgIf(latency_ms, stream), "
    "countDistinctIf(team_id, cost_nanousd > 0), maxOrNull(ttft_ms) FROM lineage WHERE {t}",
    "SELECT finalizeAggregation(s) FROM (SELECT sumState(cost_nanousd) AS s FROM lineage "
    "WHERE {t})",
    "SELECT sumMerge(s) FROM (SELECT sumState(cost_nanousd) AS s FROM lineage WHERE {t})",
    "SELECT tenant_id, provider, model, "
    "quantilesTDigestMerge(0.5, 0.9, 0.99)(latency_ms) AS q FROM provider_hourly "
    "WHERE {t} GROUP BY tenant_id, provider, model ORDER BY provider, model",
    # window functions
    "SELECT team_id, occurred_at, sum(cost_nanousd) OVER (PARTITION BY team_id "
    "ORDER BY occurred_at, event_id) AS running FROM lineage WHERE {t} "
    "ORDER BY team_id, occurred_at, event_id",
    "SELECT event_id, row_number() OVER (ORDER BY occurred_at, event_id) AS n, "
    "lagInFrame(latency_ms) OVER (ORDER BY occurred_at, event_id "
    "ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS previous "
    "FROM lineage WHERE {t} ORDER BY n",
    "SELECT team_id, rank() OVER w AS r, dense_rank() OVER w AS d FROM lineage "
    "WHERE {t} WINDOW w AS (ORDER BY cost_nanousd DESC) ORDER BY r, team_id",
    # arrays and arrayJoin
    "SELECT arrayJoin(policies_applied) AS policy, count() FROM lineage WHERE {t} "
    "GROUP BY policy ORDER BY policy",
    "SELECT length(attempts), arrayMap(a -> tupleElement(a, 1), attempts), "
    "arrayFilter(x -> x != '', policies_applied) FROM lineage WHERE {t} ORDER BY event_id",
    "SELECT step, count() FROM lineage ARRAY JOIN guardrails_triggered.name AS step "
    "WHERE {t} GROUP BY step ORDER BY step",
    "SELECT arraySort(groupUniqArray(model_requested)) FROM lineage WHERE {t}",
    # CTEs, subqueries, JOINs between tenant tables, set operations
    "WITH spend AS (SELECT team_id, sum(cost_nanousd) AS c FROM lineage WHERE {t} "
    "GROUP BY team_id) SELECT team_id, c FROM spend ORDER BY c DESC, team_id",
    "WITH (SELECT max(cost_nanousd) FROM lineage WHERE {t}) AS top "
    "SELECT count() FROM lineage WHERE {t} AND cost_nanousd = top",
    "SELECT team_id FROM (SELECT team_id, count() AS n FROM lineage WHERE {t} "
    "GROUP BY team_id) WHERE n > 0 ORDER BY team_id",
    "SELECT l.team_id, l.event_id, w.funded FROM lineage AS l "
    "LEFT JOIN (SELECT wallet_id, sum(amount_nanousd) AS funded FROM control_events "
    "WHERE {t} GROUP BY wallet_id) AS w ON w.wallet_id = l.wallet_id WHERE {t.l} "
    "ORDER BY l.event_id",
    "SELECT l.event_id, c.event_type FROM lineage AS l INNER JOIN control_events AS c "
    "ON c.tenant_id = l.tenant_id WHERE {t.l} AND {t.c} ORDER BY l.event_id, c.event_type",
    "SELECT count() FROM lineage WHERE {t} AND wallet_id IN "
    "(SELECT wallet_id FROM control_events WHERE {t})",
    "SELECT team_id FROM lineage WHERE {t} UNION DISTINCT SELECT team_id FROM control_events "
    "WHERE {t} ORDER BY team_id",
    "SELECT team_id FROM lineage WHERE {t} INTERSECT SELECT team_id FROM control_events WHERE {t}",
    # dates, strings, JSON, hashing, conditionals, types
    "SELECT toStartOfHour(occurred_at) AS h, count() FROM lineage WHERE {t} GROUP BY h ORDER BY h",
    "SELECT toDate(occurred_at) AS d, formatDateTime(min(occurred_at), '%F %T') "
    "FROM lineage WHERE {t} AND occurred_at > now() - INTERVAL 30 DAY GROUP BY d ORDER BY d",
    "SELECT dateDiff('second', min(occurred_at), max(occurred_at)) FROM lineage WHERE {t}",
    "SELECT lower(team_id), concat(provider, '/', model_selected), "
    "substring(request_sha256, 1, 8), startsWith(key_id, 'key_') FROM lineage "
    "WHERE {t} ORDER BY event_id",
    "SELECT if(http_status = 200, 'ok', 'not ok'), if(stream, 1, 0) FROM lineage WHERE {t} "
    "ORDER BY event_id",
    "SELECT multiIf(http_status = 200, 'ok', http_status >= 500, 'upstream', 'refused') AS k, "
    "count() FROM lineage WHERE {t} GROUP BY k ORDER BY k",
    "SELECT CASE WHEN cost_nanousd > 0 THEN 'paid' ELSE 'free' END AS k, count() "
    "FROM lineage WHERE {t} GROUP BY k ORDER BY k",
    "SELECT toString(event_id), toUInt64(cost_nanousd), CAST(latency_ms AS Int64), "
    "cityHash64(key_id), hex(SHA256(raw)) FROM lineage WHERE {t} ORDER BY event_id",
    "SELECT JSONExtractString('{\"a\": \"b\"}', 'a'), isNull(user_id), "
    "coalesce(error_code, '') FROM lineage WHERE {t} ORDER BY event_id",
    "SELECT team_id, count() FROM lineage WHERE {t} AND team_id LIKE '%' "
    "AND event_id IS NOT NULL GROUP BY ALL ORDER BY ALL",
    "SELECT * EXCEPT (raw, ingested_at) FROM lineage WHERE {t} ORDER BY event_id LIMIT 2",
    "SELECT tenant_id FROM lineage WHERE {t} ORDER BY occurred_at LIMIT 1 BY team_id",
    "SELECT count() FROM spend_daily FINAL WHERE {t}",
    # FORMAT clauses and query parameters
    "SELECT team_id, count() AS n FROM lineage WHERE {t} GROUP BY team_id ORDER BY team_id "
    "FORMAT JSONEachRow",
    "SELECT team_id, count() AS n FROM lineage WHERE {t} GROUP BY team_id ORDER BY team_id "
    "FORMAT CSVWithNames",
    "SELECT count() FROM lineage WHERE {t} AND cost_nanousd >= {min:Int64} "
    "AND team_id != {team:String}",
    "SELECT count() FROM lineage WHERE {t} AND team_id IN {teams:Array(String)}",
    "SELECT count() FROM lineage WHERE {t} AND has({teams:Array(String)}, team_id) "
    "AND user_id IS NOT DISTINCT FROM {nobody:Nullable(String)}",
    "SELECT 1 FROM system.one",
]

# Values of the query parameters the legitimate corpus uses.
LEGIT_PARAMETERS = {
    "keys": "key_a,key_b",
    "model": "sim-small",
    "trace": "nope",
    "min": "0",
    "team": "nobody",
    "teams": "['alpha','beta']",
    "nobody": "\\N",
}


def tenant_version(query: str) -> str:
    """The legitimate query as a tenant admin writes it (the engine filters)."""
    return query.replace("{t.l}", "1").replace("{t.c}", "1").replace("{t}", "1")


def org_version(query: str, tenant: str) -> str:
    """The same query for an org reader, filtered to `tenant` by hand."""
    return (
        query.replace("{t.l}", f"l.tenant_id = '{tenant}'")
        .replace("{t.c}", f"c.tenant_id = '{tenant}'")
        .replace("{t}", f"tenant_id = '{tenant}'")
    )
