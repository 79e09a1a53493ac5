"""The ClickHouse server users of the SQL endpoint's readers, as SQL text (no server runs
here: the statements are checked for what they grant, parsed by sqlglot where it reads
them, and for what no tenant id or password can change)."""

from __future__ import annotations

import pytest

from sinks import reader_access
from sinks.store import settings_clause

TABLES = frozenset({"lineage", "alerts", "schema_migrations"})
TENANT_TABLES = frozenset({"lineage", "alerts"})


def test_the_reader_profile_is_readonly_and_lets_queries_set_only_our_limits() -> None:
    (profile, *_) = reader_access.shared_access_sql("default", TABLES, TENANT_TABLES, "pw")
    assert "readonly = 1 CONST" in profile
    assert "allow_ddl = 0 CONST" in profile
    assert "additional_table_filters" not in profile
    changeable = profile.count("CHANGEABLE_IN_READONLY")
    assert changeable == len(reader_access.PER_QUERY_SETTINGS)


def test_org_reader_reads_our_tables_and_tenant_readers_only_tenant_tables() -> None:
    statements = reader_access.shared_access_sql("default", TABLES, TENANT_TABLES, "pw")
    org = {s for s in statements if s.endswith(f"TO {reader_access.ORG_USER}")}
    tenants = {s for s in statements if s.endswith(f"TO {reader_access.TENANT_ROLE}")}
    assert "GRANT SELECT ON default.schema_migrations TO govledger_org_reader" in org
    assert not any("schema_migrations" in s or "system.columns" in s for s in tenants)
    assert not any("system.tables" in s or "*" in s for s in statements)
    policies = [s for s in statements if s.startswith("CREATE ROW POLICY")]
    assert len(policies) == len(TENANT_TABLES)
    assert all("USING 1 TO ALL EXCEPT govledger_tenant_reader" in s for s in policies)


def test_a_tenant_users_row_policies_keep_its_rows_whatever_its_id() -> None:
    tenant = "acme'); DROP TABLE lineage; --"
    statements = reader_access.tenant_access_sql("default", TENANT_TABLES, tenant, "p'w\\")
    user = reader_access.tenant_user(tenant)
    assert user == "govledger_t_" + tenant.encode().hex()
    policies = [s for s in statements if s.startswith("CREATE ROW POLICY")]
    assert sorted(policies) == [
        f"CREATE ROW POLICY OR REPLACE {user} ON default.{table} AS PERMISSIVE FOR SELECT "
        f"USING tenant_id = unhex('{tenant.encode().hex()}') TO {user}"
        for table in sorted(TENANT_TABLES)
    ]
    assert "DROP" not in " ".join(statements)  # the id travels as hex only
    assert "BY 'p\\'w\\\\'" in statements[0]


def test_names_that_are_not_plain_are_refused() -> None:
    with pytest.raises(ValueError, match="plain name"):
        reader_access.shared_access_sql("db; DROP", TABLES, TENANT_TABLES, "pw")
    with pytest.raises(ValueError, match="plain name"):
        reader_access.tenant_access_sql("default", {"a b"}, "t", "pw")


def test_settings_clause_renders_our_values_as_literals() -> None:
    assert settings_clause({}) == ""
    assert settings_clause({"max_result_rows": 5, "x_y": "a'b\\"}) == (
        " SETTINGS max_result_rows = 5, x_y = 'a\\'b\\\\'"
    )
    with pytest.raises(AssertionError):
        settings_clause({"readonly = 0, a": 1})
    with pytest.raises(TypeError):
        settings_clause({"flag": True})
