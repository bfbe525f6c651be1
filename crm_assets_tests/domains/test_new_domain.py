"""A new CRM domain is one module: a `Domain` and its `DemoRecipe`, declared here as a throwaway one.

Nothing else is written for it: the demo CRM serves it from the declaration, its warehouse tables are
built by the schema's own helpers, and the pipeline's functions sync it end to end.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import replace
from datetime import date
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from crm_assets.demo_crm import DEMO_API_KEY, DEMO_BASE_URL, DemoConfig, DemoCrm
from crm_assets.demo_crm.data import DEMO_DOMAINS, entity_spec
from crm_assets.domains import ACCOUNTS, DEALS, Column, ColumnType, Domain, ForeignKey, in_load_order
from crm_assets.domains.demo import Built, DemoRecipe, Dirt, Draw, SettingsField, ViewKind, format_date, odd_case
from crm_assets.freshsales.client import FreshsalesClient
from crm_assets.pipeline import clean_domain, extract_domain
from crm_assets.timestamps import parse_instant
from crm_assets.transform.coerce import cast_value
from crm_assets.values import value_text
from crm_assets.warehouse import schema
from crm_assets.warehouse.schema import CANDIDATE_TABLES, CLEAN_TABLES, RAW_TABLES, rejected_records
from crm_assets.write_back.fields import read_field

PRIORITIES = ("Low", "Normal", "Urgent")
TODAY = date(2025, 6, 1)


def _ticket(d: Draw) -> Built:
    """A support ticket, with some of the dirt every demo entity carries."""
    key: object = 5001 + d.key_index
    subject: str | None = f"Ticket about {('billing', 'login', 'export', 'speed')[d.h2 % 4]} #{d.i + 1}"
    priority: str | None = PRIORITIES[(d.h1 >> 10) % 3]
    opened: str | None = format_date(d.created_ts)
    if d.kind == Dirt.MISSING:
        subject = None
    elif d.kind == Dirt.CASING and priority:
        priority = odd_case(priority, d.h2 >> 40)
    elif d.kind == Dirt.UNKNOWN:
        priority = "Whenever"
    elif d.kind == Dirt.NUMSTR:
        key = f"{key}.0"
    elif d.kind == Dirt.UNCASTABLE:
        opened = "last Tuesday"
    return {"subject": subject, "status": "open"}, {
        "cf_ticket_id": key,
        "cf_priority": priority,
        "cf_opened_on": opened,
    }


TICKETS = Domain(
    name="tickets",
    entity="tickets",
    singular="ticket",
    views=("All Tickets",),
    business_key="ticket_id",
    description="Support tickets, one row per ticket_id.",
    columns=(
        Column("ticket_id", ColumnType.BIGINT, "custom_field.cf_ticket_id", description="Business key"),
        Column("subject", ColumnType.TEXT, "subject"),
        Column("priority", ColumnType.ENUM, "custom_field.cf_priority", choices=PRIORITIES),
        Column("opened_on", ColumnType.DATE, "custom_field.cf_opened_on", nullable=True),
    ),
    demo=DemoRecipe(
        code=40,
        build=_ticket,
        count=400,
        dirt=((Dirt.UNCASTABLE, 20),),
        extra_views=(("My Tickets", ViewKind.MINE),),
        touch_field="subject",
        fields=(
            SettingsField("subject", "Subject", "text", required=True),
            SettingsField("status", "Status", "text"),
            SettingsField("cf_ticket_id", "Ticket ID", "number", custom=True),
            SettingsField("cf_priority", "Priority", "dropdown", custom=True, choices=PRIORITIES),
            SettingsField("cf_opened_on", "Opened on", "date", custom=True),
        ),
    ),
)


@pytest.fixture
def demo() -> DemoCrm:
    return DemoCrm(DemoConfig(counts={"tickets": 400}, today=TODAY), domains=(TICKETS,))


@pytest.fixture
def client(demo: DemoCrm) -> Iterator[FreshsalesClient]:
    with FreshsalesClient(
        DEMO_BASE_URL, DEMO_API_KEY, transport=demo.transport(), rate_limit_per_minute=0, rate_limit_per_hour=0
    ) as crm:
        yield crm


@pytest.fixture
def tickets_tables(warehouse_engine: Engine, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[sa.Table]]:
    """The domain's raw, candidate and clean tables, made the way schema.py makes every domain's."""
    tables = [schema._raw_table(TICKETS), schema._candidates_table(TICKETS), schema._clean_table(TICKETS)]
    for registry, table in zip((RAW_TABLES, CANDIDATE_TABLES, CLEAN_TABLES), tables, strict=True):
        monkeypatch.setitem(registry, TICKETS.name, table)
    try:
        schema.metadata.create_all(warehouse_engine, tables=tables)
        yield tables
    finally:
        for table in tables:  # the shared metadata must not keep a test's tables
            schema.metadata.remove(table)


def _read(client: httpx.Client, path: str) -> Any:
    response = client.get(path, headers={"Authorization": f"Token token={DEMO_API_KEY}"})
    response.raise_for_status()
    return response.json()


def test_the_demo_crm_serves_a_domain_from_its_declaration(demo: DemoCrm) -> None:
    with httpx.Client(transport=demo.transport(), base_url=DEMO_BASE_URL) as http:
        views = [(f["name"], f["model_class_name"]) for f in _read(http, "/api/tickets/filters")["filters"]]
        fields = {f["name"] for f in _read(http, "/api/settings/tickets/fields")["fields"]}
        first = _read(http, f"/api/tickets/{demo.crm_ids('tickets')[0]}")["ticket"]
    assert views == [("All Tickets", "Ticket"), ("My Tickets", "Ticket"), ("Recycle Bin", "Ticket")]
    assert {c.source_path[-1] for c in TICKETS.columns} <= fields
    assert first["custom_field"]["cf_ticket_id"] == 5001 and first["owner_id"] and first["created_at"]


@pytest.mark.parametrize("domain", DEMO_DOMAINS, ids=lambda d: d.name)
def test_every_mapped_field_is_in_the_demo_crm_field_settings(domain: Domain) -> None:
    """What a drift guard reads from `/settings/<entity>/fields` lists every column's source field, but for the
    timestamps every record carries."""
    assert domain.demo is not None
    listed = {f.name for f in domain.demo.fields}
    assert {c.source_path[-1] for c in domain.columns} - {"created_at", "updated_at"} <= listed


def test_a_domain_is_sized_by_name() -> None:
    assert DemoCrm(DemoConfig(counts={"tickets": 7}, today=TODAY), domains=(TICKETS,)).crm_ids("tickets") == [
        17_000_000_001 + 39 * 100_000_000 + i for i in range(7)
    ]
    assert len(DemoCrm(DemoConfig(today=TODAY), domains=(TICKETS,)).crm_ids("tickets")) == 400, "the recipe's count"
    with pytest.raises(ValueError, match=r"counts\['tickets'\] must be >= 0"):
        DemoConfig(counts={"tickets": -1})


def test_recipe_codes_must_differ() -> None:
    with pytest.raises(ValueError, match="distinct"):
        DemoCrm(DemoConfig(), domains=(*DEMO_DOMAINS, TICKETS, TICKETS))
    with pytest.raises(ValueError, match="no demo recipe"):
        entity_spec(Domain("plain", "plains", "plain", ("All",), "k", (Column("k", ColumnType.TEXT, "k"),)))


def test_a_business_key_may_not_be_nullable() -> None:
    key = ACCOUNTS.business_key
    nullable_key = tuple(replace(c, nullable=True) if c.name == key else c for c in ACCOUNTS.columns)
    with pytest.raises(ValueError, match="business key 'account_id' must not be nullable"):
        replace(ACCOUNTS, columns=nullable_key)


def _deals_pointing(fk: ForeignKey, column_type: ColumnType = ColumnType.BIGINT) -> Domain:
    columns = tuple(replace(c, type=column_type) if c.name == fk.column else c for c in DEALS.columns)
    return replace(DEALS, columns=columns, foreign_keys=(fk,))


@pytest.mark.parametrize(
    ("domains", "refused"),
    [
        ((DEALS, ACCOUNTS), "'account_id' points to 'accounts', which must be listed before it"),
        ((DEALS,), r"points to 'accounts', which is not a domain of the list \['deals'\]"),
        ((_deals_pointing(ForeignKey("account_id", "deals", "deal_id")),), "its own domain"),
        ((ACCOUNTS, ACCOUNTS, DEALS), r"domains listed twice: \['accounts'\]"),
        (
            (ACCOUNTS, _deals_pointing(ForeignKey("account_id", "accounts", "id"))),
            "business key 'account_id', not 'id'",
        ),
        (
            (ACCOUNTS, _deals_pointing(ForeignKey("account_id", "accounts", "account_id"), ColumnType.INTEGER)),
            "must have the type of accounts.account_id, bigint",
        ),
    ],
)
def test_a_foreign_key_points_to_an_earlier_domains_business_key_of_its_type(
    domains: tuple[Domain, ...], refused: str
) -> None:
    """The pipeline matches references by the business key's values, read as the key's type."""
    assert in_load_order((ACCOUNTS, DEALS)) == (ACCOUNTS, DEALS)
    with pytest.raises(ValueError, match=refused):
        in_load_order(domains)


def test_a_foreign_key_names_a_column() -> None:
    with pytest.raises(ValueError, match=r"foreign keys \['owner_id'\] are not columns"):
        replace(DEALS, foreign_keys=(ForeignKey("owner_id", "accounts", "account_id"),))


def _expected_row(record: dict[str, Any]) -> dict[str, Any] | None:
    """The clean row of a CRM record, cast by the domain's rules; None when a field is unusable."""
    try:
        row = {c.name: cast_value(c, value_text(read_field(record, c))) for c in TICKETS.columns}
    except ValueError:
        return None
    return row | {"crm_id": record["id"]}


def _clean_rows(engine: Engine) -> dict[int, dict[str, Any]]:
    table = CLEAN_TABLES[TICKETS.name]
    with engine.connect() as conn:
        return {
            r["crm_id"]: {c: r[c] for c in (*TICKETS.column_names, "crm_id")}
            for r in conn.execute(sa.select(table)).mappings()
        }


def _rejected_ids(engine: Engine) -> set[int]:
    query = sa.select(rejected_records.c.crm_id).where(rejected_records.c.domain == TICKETS.name)
    with engine.connect() as conn:
        return set(conn.execute(query).scalars())


def _sync(engine: Engine, client: FreshsalesClient, run_id: str) -> None:
    log = logging.getLogger("test_new_domain")
    extract_domain(engine, TICKETS, client, run_id, log=log)
    clean_domain(engine, TICKETS, run_id, log=log)


def test_a_new_domain_syncs_from_the_demo_crm_into_the_warehouse(
    demo: DemoCrm, client: FreshsalesClient, warehouse_engine: Engine, tickets_tables: list[sa.Table]
) -> None:
    _sync(warehouse_engine, client, "run-1")

    records = [r for r in (demo.get_record("tickets", i) for i in demo.crm_ids("tickets")) if r is not None]
    live = [r for r in records if not r["is_deleted"]]
    clean, rejected = _clean_rows(warehouse_engine), _rejected_ids(warehouse_engine)
    assert len(records) == 400 and len(live) < 400, "the Recycle Bin holds some"
    assert clean and rejected and not set(clean) & rejected
    assert set(clean) | rejected == {r["id"] for r in live}, "every live ticket is loaded or quarantined"
    for record in live:
        if record["id"] in clean:
            assert clean[record["id"]] == _expected_row(record)
    unusable = {r["id"] for r in live if _expected_row(r) is None}
    assert unusable and unusable <= rejected
    assert any(r["custom_field"]["cf_priority"] not in PRIORITIES for r in live if r["id"] in clean), (
        "odd casing is cleaned, not rejected"
    )

    loaded = next(iter(clean))
    renamed = demo.update_record("tickets", loaded, {"subject": "Refund please"})
    demo.delete_record("tickets", next(i for i in clean if i != loaded))
    _sync(warehouse_engine, client, "run-2")

    after = _clean_rows(warehouse_engine)
    assert after[loaded]["subject"] == "Refund please"
    assert parse_instant(renamed["updated_at"]) is not None
    assert len(after) == len(clean) - 1, "the deleted ticket left the clean table"
