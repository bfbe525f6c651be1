"""The warehouse schema, as SQLAlchemy Core tables.

Clean tables are derived from the domain declarations; the rest (raw extracts, rejects, sync state,
aggregations, the write-back audit) are fixed. Alembic migrations under `migrations/` create and evolve
exactly this metadata.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeEngine

from crm_assets.domains import DEFAULT_DOMAINS, ColumnType, Domain

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY.
SurrogateKey = BigInteger().with_variant(Integer(), "sqlite")
Payload = JSON().with_variant(JSONB(), "postgresql")
UtcTimestamp = DateTime(timezone=True)
Money = Numeric(18, 2, asdecimal=True)
# A sum of Money: wide enough for the total of any realistic number of the largest deals (38 digits, the
# widest polars Decimal). A sum of NUMERIC(18, 2) values does not fit NUMERIC(18, 2).
MoneyTotal = Numeric(38, 2, asdecimal=True)

AGGREGATION_TYPES = ("daily", "weekly", "monthly")

_SQL_TYPES: dict[ColumnType, TypeEngine[Any]] = {
    ColumnType.TEXT: Text(),
    ColumnType.BIGINT: BigInteger(),
    ColumnType.INTEGER: Integer(),
    ColumnType.DECIMAL: Money,
    ColumnType.DATE: Date(),
    ColumnType.TIMESTAMP: UtcTimestamp,
    ColumnType.ENUM: Text(),
}


def _in_list(column: str, choices: tuple[str, ...]) -> str:
    quoted = ", ".join("'" + c.replace("'", "''") + "'" for c in choices)
    return f"{column} IN ({quoted})"


def _clean_table(domain: Domain) -> Table:
    columns: list[Column[Any]] = [Column("id", SurrogateKey, primary_key=True, autoincrement=True)]
    for col in domain.columns:
        sql_type = _SQL_TYPES[col.type]
        if col.type is ColumnType.TEXT and col.name == domain.business_key:
            sql_type = String()  # VARCHAR, unbounded: a key is never truncated or refused for its length
        fk = next((f for f in domain.foreign_keys if f.column == col.name), None)
        args = [ForeignKey(f"{fk.domain}.{fk.target_column}", ondelete="CASCADE")] if fk else []
        columns.append(
            Column(
                col.name,
                sql_type,
                *args,
                nullable=col.nullable,
                unique=col.name == domain.business_key,
                # A referencing column needs its own index: deleting a referenced row looks its dependents up.
                index=fk is not None,
                comment=col.description or None,
            )
        )
    columns += [
        Column("crm_id", BigInteger, nullable=False, index=True, comment="Freshsales record id"),
        Column("updated_at", UtcTimestamp, nullable=False, comment="Freshsales updated_at (UTC)"),
    ]
    checks = [
        CheckConstraint(_in_list(c.name, c.choices), name=f"{c.name}_domain")
        for c in domain.columns
        if c.type is ColumnType.ENUM
    ]
    return Table(domain.name, metadata, *columns, *checks, comment=domain.description or None)


def _raw_table(domain: Domain) -> Table:
    return Table(
        domain.raw_table,
        metadata,
        Column("crm_id", BigInteger, primary_key=True, autoincrement=False),
        Column("payload", Payload, nullable=False, comment="The record exactly as the CRM returned it"),
        Column("updated_at", UtcTimestamp, nullable=False),
        Column("is_deleted", Boolean, nullable=False, default=False),
        Column("synced_at", UtcTimestamp, nullable=False),
        Column("run_id", String(64), nullable=True),
        Column("change_seq", BigInteger, nullable=False, index=True, comment="raise with every change; see sync_state"),
        comment=f"Freshsales {domain.entity} as extracted, one row per CRM id",
    )


def _candidates_table(domain: Domain) -> Table:
    """Every live record of a domain, coerced to its column types: the contestants for the clean table.

    Kept up to date from changed raw rows only, so a clean run re-decides just the business keys it touches.
    """
    indexed = domain.indexed_columns
    return Table(
        f"{domain.name}_candidates",
        metadata,
        Column("crm_id", BigInteger, primary_key=True, autoincrement=False),
        Column("updated_at", UtcTimestamp, nullable=False),
        *(Column(c.name, _SQL_TYPES[c.type], nullable=True, index=c.name in indexed) for c in domain.columns),
        Column("error", Text, nullable=True, comment="why the record cannot be loaded as is; NULL when it can"),
        comment=f"{domain.name} records coerced to column types, before duplicates and orphans are decided",
    )


# From the declarations: a field map (CRM_FIELD_MAP) changes where columns are read from, never the tables.
CLEAN_TABLES: dict[str, Table] = {d.name: _clean_table(d) for d in DEFAULT_DOMAINS}
RAW_TABLES: dict[str, Table] = {d.name: _raw_table(d) for d in DEFAULT_DOMAINS}
CANDIDATE_TABLES: dict[str, Table] = {d.name: _candidates_table(d) for d in DEFAULT_DOMAINS}

rejected_records = Table(
    "rejected_records",
    metadata,
    Column("id", SurrogateKey, primary_key=True, autoincrement=True),
    Column("domain", String(64), nullable=False),
    Column("crm_id", BigInteger, nullable=True),
    Column("reason", Text, nullable=False),
    Column("problem", String(255), nullable=False, comment="the kinds of problem, without values, for counting"),
    Column("payload", Payload, nullable=True),
    Column("run_id", String(64), nullable=True),
    Column("rejected_at", UtcTimestamp, nullable=False),
    Index("ix_rejected_records_domain_crm_id", "domain", "crm_id"),
    comment="Records that could not be loaded, and why; re-decided whenever a record or its rivals change",
)

sync_state = Table(
    "sync_state",
    metadata,
    Column("domain", String(64), primary_key=True),
    Column("cursor", UtcTimestamp, nullable=True, comment="Highest updated_at seen"),
    Column("last_full_sync_at", UtcTimestamp, nullable=True),
    Column("cleaned_through", BigInteger, nullable=True, comment="raw change_seq the clean table reflects"),
    Column("updated_at", UtcTimestamp, nullable=False),
    comment="Incremental extraction cursors and how far each clean table has caught up",
)

deal_aggregations = Table(
    "deal_aggregations",
    metadata,
    Column("id", SurrogateKey, primary_key=True, autoincrement=True),
    Column("account_id", BigInteger, ForeignKey("accounts.account_id", ondelete="CASCADE"), nullable=True),
    Column("aggregation_type", String(16), nullable=False),
    Column("aggregation_date", Date, nullable=False),
    Column("total_deal_size", MoneyTotal, nullable=False),
    Column("deal_count", Integer, nullable=False),
    UniqueConstraint("account_id", "aggregation_type", "aggregation_date"),
    CheckConstraint(_in_list("aggregation_type", AGGREGATION_TYPES), name="aggregation_type_domain"),
    Index("ix_deal_aggregations_type_date", "aggregation_type", "aggregation_date"),
    comment="Deal totals per account and day / ISO week / month (UTC windows)",
)

crm_update_audit = Table(
    "crm_update_audit",
    metadata,
    Column("id", SurrogateKey, primary_key=True, autoincrement=True),
    Column("run_id", String(64), nullable=False),
    Column("domain", String(64), nullable=False),
    Column("crm_id", BigInteger, nullable=False),
    Column("field", String(128), nullable=False),
    Column("old_value", Text, nullable=True),
    Column("new_value", Text, nullable=True),
    Column("status", String(32), nullable=False, comment="applied, skipped, failed, planned"),
    Column("error", Text, nullable=True),
    Column("changed_at", UtcTimestamp, nullable=False),
    Index("ix_crm_update_audit_run", "run_id"),
    comment="One row per record the update_domain_value job touched or tried to",
)

Index("ix_deals_created_at", CLEAN_TABLES["deals"].c.created_at)

# -- resumable extraction (a long scan survives a crash, a deploy or a kill) ------------------------

raw_scans = Table(
    "raw_scans",
    metadata,
    Column("domain", String(64), primary_key=True),
    Column("scan_id", String(32), nullable=False, unique=True),
    Column("full_scan", Boolean, nullable=False),
    Column("since", UtcTimestamp, nullable=True, comment="incremental: records updated at or after this"),
    Column("reason", Text, nullable=False, comment="why this kind of scan was planned"),
    Column("started_at", UtcTimestamp, nullable=False),
    Column("checkpointed_at", UtcTimestamp, nullable=False),
    Column("run_id", String(64), nullable=True, comment="the run that started the scan"),
    Column("refused", Text, nullable=True, comment="why the merge was refused (mass delete); NULL: not refused"),
    comment="The unfinished extraction of each domain: resumed from its checkpoints, merged once complete",
)

raw_scan_views = Table(
    "raw_scan_views",
    metadata,
    Column("domain", String(64), primary_key=True),
    Column("view", String(255), primary_key=True),
    Column("next_page", Integer, nullable=False, comment="the first page the unfinished scan has not staged"),
    Column("done", Boolean, nullable=False),
    Column("records", BigInteger, nullable=False, comment="records the unfinished scan staged from this view"),
    Column("last_full_records", BigInteger, nullable=True, comment="records the last complete full scan listed"),
    Column("last_full_at", UtcTimestamp, nullable=True),
    comment="Per view: the unfinished scan's position, and what the last complete full scan listed",
)

raw_scan_records = Table(
    "raw_scan_records",
    metadata,
    Column("id", SurrogateKey, primary_key=True, autoincrement=True),
    Column("scan_id", String(32), nullable=False),
    Column("crm_id", BigInteger, nullable=True, comment="NULL only for a rejected record without a usable id"),
    Column("kind", String(16), nullable=False, comment="listed, deleted, confirmed, gone or rejected"),
    Column("payload", Payload, nullable=True),
    Column("updated_at", UtcTimestamp, nullable=True),
    Column("is_deleted", Boolean, nullable=False),
    Column("reason", Text, nullable=True, comment="rejected: why the warehouse cannot store the record"),
    Column("problem", String(255), nullable=True),
    Index("ix_raw_scan_records_scan_crm_id", "scan_id", "crm_id"),
    comment="Pages of unfinished scans, staged durably as they arrive; emptied when the scan is merged",
)

# -- deal history (issue 11): versions of each deal, stage changes, and the open pipeline per day --

HISTORY_TRACKED_COLUMNS = (
    "deal_name",
    "deal_size",
    "deal_stage",
    "probability_of_closure",
    "account_id",
    "created_at",
)
_DEALS = CLEAN_TABLES["deals"]

deal_history = Table(
    "deal_history",
    metadata,
    Column("id", SurrogateKey, primary_key=True, autoincrement=True),
    Column("deal_id", BigInteger, nullable=False),
    Column("crm_id", BigInteger, nullable=False, comment="Freshsales record id of this version"),
    Column("valid_from", UtcTimestamp, nullable=False, comment="the CRM's updated_at of this version (UTC)"),
    Column("valid_to", UtcTimestamp, nullable=True, comment="valid_from of the next version; NULL = current"),
    *(Column(c, _DEALS.c[c].type, nullable=True) for c in HISTORY_TRACKED_COLUMNS),
    Column("is_deleted", Boolean, nullable=False, comment="this version records the deal leaving `deals`"),
    Column("first_observed_at", UtcTimestamp, nullable=False, comment="when a sync first saw this deal"),
    Index("ix_deal_history_deal_id_valid_from", "deal_id", "valid_from"),
    Index(
        "uq_deal_history_open_deal_id",
        "deal_id",
        unique=True,
        postgresql_where=text("valid_to IS NULL"),
        sqlite_where=text("valid_to IS NULL"),
    ),
    Index(
        "ix_deal_history_open_account_id",
        "account_id",
        postgresql_where=text("valid_to IS NULL"),
        sqlite_where=text("valid_to IS NULL"),
    ),
    comment="One row per version of a deal (type 2): what `deals` held for it from valid_from to valid_to",
)

deal_stage_transitions = Table(
    "deal_stage_transitions",
    metadata,
    Column("id", SurrogateKey, primary_key=True, autoincrement=True),
    Column("deal_id", BigInteger, nullable=False, index=True),
    Column("from_stage", Text, nullable=False),
    Column("to_stage", Text, nullable=False),
    Column("changed_at", UtcTimestamp, nullable=False),
    Column("days_in_from_stage", Float, nullable=True, comment="NULL when from_stage was entered before the history"),
    comment="One row per stage change of a deal, derived from deal_history",
)

pipeline_daily = Table(
    "pipeline_daily",
    metadata,
    Column("id", SurrogateKey, primary_key=True, autoincrement=True),
    Column("day", Date, nullable=False),
    Column("deal_stage", Text, nullable=False),
    Column("region", Text, nullable=True, comment="the account's region now; NULL when the account is gone"),
    Column("open_deal_count", Integer, nullable=False),
    Column("open_deal_value", MoneyTotal, nullable=False),
    Index("ix_pipeline_daily_day", "day"),
    comment="Open deals per stage and region as of the end of each UTC day, from deal_history",
)

derived_state = Table(
    "derived_state",
    metadata,
    Column("table_name", String(64), primary_key=True, comment="a table kept up to date incrementally"),
    Column("built_through", BigInteger, nullable=False, comment="the highest id of its source table it reflects"),
    Column(
        "built_through_mark",
        Text,
        nullable=False,
        comment="what that source row held (a rewritten source no longer matches it); empty: no row",
    ),
    Column("updated_at", UtcTimestamp, nullable=False),
    comment="How far each table derived incrementally from another (deal_stage_transitions) has caught up",
)

crm_rate_budget = Table(
    "crm_rate_budget",
    metadata,
    Column("account", Text, primary_key=True, comment="The CRM account (host) whose budget this is"),
    Column("state", Text, nullable=False, comment="Recent grant times and the CRM's last rate-limit headers (JSON)"),
    Column("updated_at", UtcTimestamp, nullable=False),
    comment="The CRM request budget every process of a deployment shares (PostgreSQL; SQLite uses a file)",
)
