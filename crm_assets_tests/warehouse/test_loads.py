"""Raw and clean loads on both databases: idempotent, change-aware, transactional."""

from __future__ import annotations

import hashlib
import threading
from datetime import UTC, datetime
from typing import Any

import polars as pl
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from crm_assets.domains import ACCOUNTS
from crm_assets.warehouse import clean_load
from crm_assets.warehouse.clean_load import clean_changes, read_clean_rows
from crm_assets.warehouse.engine import SQLITE_BUSY_TIMEOUT_SECONDS, SQLITE_CACHE_KIB, create_warehouse_engine, migrate
from crm_assets.warehouse.raw import RawWriter, read_cursor, read_live_fields, save_cursor
from crm_assets.warehouse.schema import CLEAN_TABLES, RAW_TABLES, rejected_records


def account(crm_id: int, account_id: int, updated: str = "2024-01-01T10:00:00-06:00", **extra: Any) -> dict[str, Any]:
    custom = {
        "cf_account_id": account_id,
        "cf_industry": "Tech",
        "cf_account_value": "1000",
        "cf_region": "Europe",
    }
    return {
        "id": crm_id,
        "name": f"Account {account_id}",
        "updated_at": updated,
        "custom_field": custom,
    } | extra


def contact(crm_id: int, contact_id: str) -> dict[str, Any]:
    return {
        "id": crm_id,
        "external_id": contact_id,
        "first_name": "Ada",
        "last_name": "Lovelace",
        "email": f"ada{crm_id}@example.com",
        "updated_at": "2024-01-01T00:00:00Z",
        "custom_field": {"cf_lead_source": "website"},
    }


def write_raw(  # type: ignore[no-untyped-def]
    engine: Engine, records: list[dict[str, Any]], *, reconcile: bool = False, deleted=(), domain=ACCOUNTS, confirm=None
):
    with engine.begin() as conn:
        writer = RawWriter(conn, domain, "run")
        writer.add(records)
        writer.add(deleted, deleted=True)
        return writer.merge(reconcile=reconcile, confirm=confirm)


def load_clean(engine: Engine, domain=ACCOUNTS, **kwargs: Any):  # type: ignore[no-untyped-def]
    with engine.begin() as conn:
        return clean_changes(conn, domain, "run", track=["account_name"] if domain is ACCOUNTS else [], **kwargs)


def raw_rows(engine: Engine) -> dict[int, bool]:
    table = RAW_TABLES["accounts"]
    with engine.connect() as conn:
        return dict(conn.execute(sa.select(table.c.crm_id, table.c.is_deleted)).tuples().all())


def test_raw_merge_counts_new_and_changed_and_skips_unchanged(warehouse_engine: Engine) -> None:
    first = write_raw(warehouse_engine, [account(1, 10), account(2, 20)])
    assert (first.inserted, first.updated) == (2, 0)
    again = write_raw(warehouse_engine, [account(1, 10), account(2, 20)])
    assert (again.inserted, again.updated) == (0, 0)
    changed = write_raw(warehouse_engine, [account(1, 10, updated="2024-02-01T00:00:00Z"), account(3, 30)])
    assert (changed.inserted, changed.updated) == (1, 1)


def stored_name(engine: Engine) -> str:
    with engine.connect() as conn:
        return str(conn.execute(sa.select(RAW_TABLES["accounts"].c.payload)).scalar_one()["name"])


@pytest.mark.parametrize("reconcile", [False, True])
def test_a_copy_read_before_a_newer_one_was_stored_never_replaces_it(warehouse_engine: Engine, reconcile: bool) -> None:
    """A sync reads a page, a write-back stores the record's newer copy, then the sync merges its page: the
    newer copy stays, on an incremental run and on a full listing alike; a newer copy still replaces it."""
    write_raw(warehouse_engine, [account(1, 10, name="Before")])
    with warehouse_engine.begin() as conn:
        sync = RawWriter(conn, ACCOUNTS, "sync")  # begins reading
        write_back = RawWriter(conn, ACCOUNTS, "write-back")
        write_back.add([account(1, 10, updated="2024-03-01T00:00:00Z", name="After the write-back")])
        write_back.merge(reconcile=False)
        sync.add([account(1, 10, name="Before")])
        stale = sync.merge(reconcile=reconcile)
    assert (stale.inserted, stale.updated) == (0, 0)
    assert stored_name(warehouse_engine) == "After the write-back"
    newer = write_raw(warehouse_engine, [account(1, 10, updated="2024-04-01T00:00:00Z", name="Later")])
    assert newer.updated == 1 and stored_name(warehouse_engine) == "Later"


def test_an_older_copy_read_after_the_stored_one_replaces_it(warehouse_engine: Engine) -> None:
    """The CRM's clock went back: an edit read after the stored copy carries an older updated_at, and is taken."""
    write_raw(warehouse_engine, [account(1, 10, updated="2024-03-01T00:00:00Z", name="Before")])
    edited = write_raw(warehouse_engine, [account(1, 10, name="Edited")])
    assert edited.updated == 1 and stored_name(warehouse_engine) == "Edited"
    again = write_raw(warehouse_engine, [account(1, 10, name="Edited")])  # the same copy: nothing to take
    assert again.updated == 0


def test_the_same_record_twice_in_one_fetch_keeps_the_newest(warehouse_engine: Engine) -> None:
    old, new = account(1, 10), account(1, 11, updated="2024-03-01T00:00:00Z")
    stats = write_raw(warehouse_engine, [new, old])
    assert stats.inserted == 1
    load_clean(warehouse_engine)
    with warehouse_engine.connect() as conn:
        assert conn.execute(sa.select(CLEAN_TABLES["accounts"].c.account_id)).scalars().all() == [11]


def test_recycle_bin_and_reconciliation_remove_records_from_the_clean_table(warehouse_engine: Engine) -> None:
    write_raw(warehouse_engine, [account(1, 10), account(2, 20), account(3, 30)])
    load_clean(warehouse_engine)
    write_raw(warehouse_engine, [], deleted=[account(2, 20, is_deleted=True)])
    # 3 vanished from the CRM: a GET of it answers 404
    write_raw(warehouse_engine, [account(1, 10)], reconcile=True, confirm=lambda ids: dict.fromkeys(ids))
    assert raw_rows(warehouse_engine) == {1: False, 2: True, 3: True}
    changes = load_clean(warehouse_engine)
    assert (changes.deleted, changes.unchanged) == (2, 1)


def test_clean_load_is_idempotent_and_reports_what_changed(warehouse_engine: Engine) -> None:
    write_raw(warehouse_engine, [account(1, 10), account(2, 20)])
    first = load_clean(warehouse_engine)
    assert (first.inserted, first.updated, first.deleted) == (2, 0, 0)
    second = load_clean(warehouse_engine)
    assert (second.inserted, second.updated, second.deleted, second.unchanged) == (0, 0, 0, 2)
    write_raw(warehouse_engine, [account(2, 20, updated="2024-05-01T00:00:00Z", name="Renamed")])
    third = load_clean(warehouse_engine)
    assert (third.inserted, third.updated, third.unchanged) == (0, 1, 1)
    assert pl.concat(third.before)["account_name"].to_list() == ["Account 20"]


def test_rejected_records_keep_reason_payload_and_run(warehouse_engine: Engine) -> None:
    bad = account(5, 50)
    bad["custom_field"]["cf_region"] = "Mars"
    write_raw(warehouse_engine, [account(1, 10), bad])
    changes = load_clean(warehouse_engine)
    assert changes.rejected == 1
    with warehouse_engine.connect() as conn:
        row = conn.execute(sa.select(rejected_records)).one()
    assert (row.domain, row.crm_id, row.run_id) == ("accounts", 5, "run")
    assert "region: cannot use Mars" in row.reason
    assert row.payload["custom_field"]["cf_region"] == "Mars"


def test_a_failure_in_the_middle_of_a_load_leaves_the_tables_as_they_were(
    warehouse_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_raw(warehouse_engine, [account(1, 10), account(2, 20)])
    load_clean(warehouse_engine)
    write_raw(warehouse_engine, [account(1, 10, updated="2024-06-01T00:00:00Z", name="New")], reconcile=True)

    def explode(*args: Any, **kwargs: Any) -> int:
        raise RuntimeError("disk full")

    monkeypatch.setattr(clean_load, "upsert_from_stage", explode)  # after account 20 is deleted
    with pytest.raises(RuntimeError, match="disk full"):
        load_clean(warehouse_engine)
    with warehouse_engine.connect() as conn:
        rows = conn.execute(sa.select(CLEAN_TABLES["accounts"].c.account_name).order_by("account_id")).scalars()
        assert rows.all() == ["Account 10", "Account 20"]


def test_sync_cursor_round_trips(warehouse_engine: Engine) -> None:
    instant = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    with warehouse_engine.begin() as conn:
        save_cursor(conn, ACCOUNTS, instant, full=True)
        save_cursor(conn, ACCOUNTS, None, full=False)
    with warehouse_engine.connect() as conn:
        state = read_cursor(conn, ACCOUNTS)
    assert state.cursor == instant
    assert state.last_full_sync_at is not None


@pytest.mark.postgres
def test_parallel_first_migrations_do_not_race(pg_url: str) -> None:
    errors: list[BaseException] = []

    def run() -> None:
        engine = create_warehouse_engine(pg_url)
        try:
            migrate(engine)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert set(CLEAN_TABLES) <= set(sa.inspect(create_warehouse_engine(pg_url)).get_table_names())


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://crm:s3cret-pw@127.0.0.1:1/nowhere",
        # libpq takes the password (and a client key's) as connection parameters too
        "postgresql+psycopg://crm@127.0.0.1:1/nowhere?password=s3cret-pw&sslmode=prefer",
        "postgresql+psycopg://crm@127.0.0.1:1/nowhere?sslpassword=s3cret-pw",
    ],
)
def test_unreachable_database_names_the_url_without_password(url: str) -> None:
    from crm_assets.warehouse.engine import WarehouseConnectionError, check_connection, safe_url

    engine = create_warehouse_engine(url)
    with pytest.raises(WarehouseConnectionError) as caught:
        check_connection(engine)
    assert "127.0.0.1:1/nowhere" in str(caught.value)
    assert "s3cret-pw" not in str(caught.value) and "s3cret-pw" not in safe_url(url)
    assert "sslmode=prefer" in safe_url(url) or "sslmode" not in url
    assert "***" in safe_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg:///dbname=crm%20host=db%20password=s3cret-pw",  # a libpq connection string as the name
        "postgresql+psycopg:///?dbname=host%3Ddb%20PASSWORD%20%3D%20%27s3cret-pw%20x%27%20port%3D5",
        "postgresql+psycopg://crm@db/crm?application_name=sslpassword%3Ds3cret-pw",
    ],
)
def test_a_password_inside_a_libpq_connection_string_is_hidden(url: str) -> None:
    from crm_assets.warehouse.engine import safe_url

    shown = safe_url(url)
    assert "s3cret" not in shown and "***" in shown
    assert "db" in shown  # the rest stays, to tell which database


def test_an_sqlite_too_old_for_the_warehouse_is_named_before_anything_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    from crm_assets.warehouse import engine as warehouse_engine
    from crm_assets.warehouse.engine import WarehouseConnectionError

    monkeypatch.setattr(warehouse_engine.sqlite3, "sqlite_version_info", (3, 37, 2))
    with pytest.raises(WarehouseConnectionError, match=r"SQLite is 3\.37\.2; the embedded warehouse needs 3\.38\.0"):
        create_warehouse_engine("sqlite://")


@pytest.mark.postgres
def test_the_servers_refusal_does_not_repeat_a_password_inside_the_database_name(pg_url: str) -> None:
    """PostgreSQL names the database it did not find: `database "dbname=crm password=..." does not exist`."""
    from crm_assets.warehouse.engine import WarehouseConnectionError, check_connection

    server = make_url(pg_url)
    engine = create_warehouse_engine(server.set(database="dbname=crm password=s3cret-pw"))
    with pytest.raises(WarehouseConnectionError) as caught:
        check_connection(engine)
    assert "does not exist" in str(caught.value) and "s3cret" not in str(caught.value)


def test_every_sqlite_connection_gets_the_warehouse_settings(sqlite_url: str) -> None:
    engine = create_warehouse_engine(sqlite_url)
    for _ in range(2):  # the pool's connection, then a new one
        with engine.connect() as conn:

            def setting(name: str) -> object:
                return conn.exec_driver_sql(f"PRAGMA {name}").scalar()

            assert setting("busy_timeout") == SQLITE_BUSY_TIMEOUT_SECONDS * 1000
            assert setting("foreign_keys") == 1
            assert setting("journal_mode") == "wal"
            assert setting("synchronous") == 1  # NORMAL
            assert setting("cache_size") == -SQLITE_CACHE_KIB
        engine.dispose()


def test_read_frame_types_match_on_both_dialects(warehouse_engine: Engine) -> None:
    write_raw(warehouse_engine, [account(1, 10)])
    with warehouse_engine.connect() as conn:
        frame = read_live_fields(conn, ACCOUNTS)
    assert frame.schema["updated_at"] == pl.Datetime("us", "UTC")
    assert frame.row(0, named=True)["account_value"] == "1000"
    assert frame.row(0, named=True)["updated_at"] == datetime(2024, 1, 1, 16, tzinfo=UTC)


def test_awkward_values_are_loaded_or_quarantined_never_fatal(warehouse_engine: Engine) -> None:
    """A NUL character, a JSON boolean, an out-of-range timestamp: the same outcome on both databases."""
    nul = account(1, 10, name="Acme\x00 Ltd")
    boolean = account(2, 20)
    boolean["custom_field"]["cf_account_value"] = True
    ancient = account(3, 30, updated="0001-01-01T00:00:00+01:00")
    write_raw(warehouse_engine, [nul, boolean, ancient])
    changes = load_clean(warehouse_engine)
    with warehouse_engine.connect() as conn:
        names = dict(
            conn.execute(sa.select(CLEAN_TABLES["accounts"].c.crm_id, CLEAN_TABLES["accounts"].c.account_name)).all()
        )
        reasons = dict(conn.execute(sa.select(rejected_records.c.crm_id, rejected_records.c.reason)).all())
    assert names == {1: "Acme\ufffd Ltd", 3: "Account 30"}
    assert reasons == {2: "account_value: cannot use true, expected a whole number"}
    assert changes.rejected == 1


def test_long_text_business_keys_are_kept_whole(warehouse_engine: Engine) -> None:
    from crm_assets.domains import CONTACTS

    key = "C-" + "x" * 400
    contact = {
        "id": 9,
        "external_id": key,
        "first_name": "Ada",
        "last_name": "Lovelace",
        "email": "ada@example.com",
        "updated_at": "2024-01-01T00:00:00Z",
        "custom_field": {"cf_lead_source": "website"},
    }
    write_raw(warehouse_engine, [contact], domain=CONTACTS)
    with warehouse_engine.begin() as conn:
        clean_changes(conn, CONTACTS, "run")
        assert read_clean_rows(conn, CONTACTS)["contact_id"].to_list() == [key]


def test_keys_with_percent_signs_and_quotes_are_decided_like_any_other(warehouse_engine: Engine) -> None:
    """A chunk's bounds reach the contest's queries as values: a key with a % in it (which the PostgreSQL
    driver escapes) or a quote is decided, whichever chunk it bounds."""
    from crm_assets.domains import CONTACTS

    keys = ["a", "b%1", "c'%%d", "d%", "e"]
    write_raw(warehouse_engine, [contact(i, key) for i, key in enumerate(keys, start=1)], domain=CONTACTS)
    with warehouse_engine.begin() as conn:
        changes = clean_changes(conn, CONTACTS, "run", chunk_size=2)
        assert read_clean_rows(conn, CONTACTS)["contact_id"].to_list() == keys
    assert changes.keys_decided == len(keys)


def test_numbers_beyond_64_bits_are_read_digit_for_digit(warehouse_engine: Engine) -> None:
    """Text keys the CRM sends as JSON numbers past 2**63 (storable up to 2**64): SQLite's json_extract would
    read both as one 15-digit REAL, a false duplicate; they load as PostgreSQL reads them, whole."""
    from crm_assets.domains import CONTACTS

    keys = [2**63 + 1, 2**63 + 3, 2**64 - 1]
    records = [contact(i, "") | {"external_id": key} for i, key in enumerate(keys, start=1)]  # numbers, not text
    write_raw(warehouse_engine, records, domain=CONTACTS)
    with warehouse_engine.begin() as conn:
        changes = clean_changes(conn, CONTACTS, "run")
        assert read_clean_rows(conn, CONTACTS)["contact_id"].to_list() == sorted(str(key) for key in keys)
    assert changes.rejected == 0


def test_keys_at_the_ends_of_64_bits_are_decided_like_any_other(warehouse_engine: Engine) -> None:
    """A chunk bounded by the smallest 64-bit key is decided: on PostgreSQL its bound reaches the query as a
    negative literal before the cast (-9223372036854775808::BIGINT would cast first, and overflow)."""
    keys = [-(2**63), -(2**31), -1, 0, 2**63 - 1]
    write_raw(warehouse_engine, [account(i, key) for i, key in enumerate(keys, start=1)])
    with warehouse_engine.begin() as conn:
        changes = clean_changes(conn, ACCOUNTS, "run", chunk_size=1)
        assert read_clean_rows(conn, ACCOUNTS)["account_id"].to_list() == keys
    assert changes.keys_decided == len(keys)


def test_a_key_too_long_to_index_is_quarantined_and_the_rest_loads(warehouse_engine: Engine) -> None:
    """A text business key beyond what a PostgreSQL index entry holds rejects its record, not the run."""
    from crm_assets.domains import CONTACTS
    from crm_assets.transform.coerce import KEY_MAX_BYTES

    # 4 KB that do not compress (PostgreSQL compresses a long index entry first), and 1 byte over the limit.
    incompressible = "".join(hashlib.sha256(bytes([n])).hexdigest() for n in range(63))
    keys = ["a", incompressible, "b" + "é" * (KEY_MAX_BYTES // 2), "z"]
    write_raw(warehouse_engine, [contact(i, key) for i, key in enumerate(keys, start=1)], domain=CONTACTS)
    with warehouse_engine.begin() as conn:
        changes = clean_changes(conn, CONTACTS, "run")
        assert read_clean_rows(conn, CONTACTS)["contact_id"].to_list() == ["a", "z"]
        quarantined = conn.execute(sa.select(rejected_records.c.crm_id, rejected_records.c.payload)).all()
    assert changes.rejected_by_reason == {"contact_id: uncastable": 2}
    assert sorted(crm_id for crm_id, _ in quarantined) == [2, 3]
    assert all(payload is not None for _, payload in quarantined)


@pytest.mark.parametrize("value", [-(2**63), -(2**31), -(2**15)])
def test_read_frame_binds_the_smallest_integers(warehouse_engine: Engine, value: int) -> None:
    from crm_assets.warehouse.bulk import read_frame

    types = {"bigint": (sa.BigInteger(), 63), "integer": (sa.Integer(), 31), "smallint": (sa.SmallInteger(), 15)}
    fitting = {name: t for name, (t, bits) in types.items() if value >= -(2**bits)}
    literals: list[Any] = [sa.literal(value, t).label(name) for name, t in fitting.items()]
    query = sa.select(*literals)
    with warehouse_engine.connect() as conn:
        frame = read_frame(conn, query, dict.fromkeys(fitting, pl.Int64()))
    assert frame.row(0) == (value,) * len(fitting)


@pytest.mark.parametrize("bound", [False, True])
def test_read_frame_keeps_percent_signs(warehouse_engine: Engine, bound: bool) -> None:
    from crm_assets.warehouse.bulk import read_frame

    text = sa.literal("50%", sa.String) if bound else sa.literal_column("'50%'")
    placeholder_like = sa.literal_column("'%(x)s'", sa.String)  # text that reads like a parameter's placeholder
    labeled: list[Any] = [
        text.label("text"),
        sa.literal_column("'100%'").label("other"),
        placeholder_like.label("like"),
    ]
    query = sa.select(*labeled)
    with warehouse_engine.connect() as conn:
        frame = read_frame(conn, query, {"text": pl.String(), "other": pl.String(), "like": pl.String()})
    assert frame.rows() == [("50%", "100%", "%(x)s")]


@pytest.mark.parametrize("options", [{"stream_results": True}, {"yield_per": 2}])
def test_read_frame_keeps_the_rows_sqlalchemy_buffers(warehouse_engine: Engine, options: dict[str, Any]) -> None:
    """Streaming or batched results make SQLAlchemy fetch a row ahead: those rows are read too."""
    from crm_assets.warehouse.bulk import create_stage, read_frame

    with warehouse_engine.begin() as conn:
        stage = create_stage(conn, RAW_TABLES["deals"], ["crm_id"])
        conn.execute(stage.insert(), [{"crm_id": i} for i in range(5)])
        query = sa.select(stage.c.crm_id).order_by(stage.c.crm_id).execution_options(**options)
        assert read_frame(conn, query, {"crm_id": pl.Int64()})["crm_id"].to_list() == [0, 1, 2, 3, 4]


def test_sqlite_stores_a_frame_exactly_as_sqlalchemy_binds_it(sqlite_url: str) -> None:
    """fill_stage converts by column in polars what SQLAlchemy would convert value by value: the same stored text."""
    from decimal import Decimal

    from crm_assets.domains import DEALS
    from crm_assets.transform.clean import output_schema
    from crm_assets.warehouse.bulk import create_stage, fill_stage

    deals = CLEAN_TABLES["deals"]
    schema = output_schema(DEALS)
    rows = [
        (
            1,
            "Renewal",
            Decimal("364820.50"),
            "50%",
            "Prospecting",
            7,
            datetime(2023, 12, 1, 6, tzinfo=UTC),
            11,
            datetime(2024, 4, 16, 5, 15, 0, 123, tzinfo=UTC),
        ),
        (
            2,
            "Ünïcode 'quoted'",
            Decimal("0.10"),
            "",
            "Closed-Won",
            8,
            datetime(1970, 1, 1, tzinfo=UTC),
            12,
            datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=UTC),
        ),
        (
            3,
            "None",
            None,
            "x",
            "Negotiation",
            9,
            datetime(2099, 12, 31, 12, 30, 1, tzinfo=UTC),
            13,
            datetime(2024, 1, 1, tzinfo=UTC),
        ),
        (
            4,
            "big",
            Decimal("92233720368547.75"),
            "y",
            "Closed-Lost",
            10,
            datetime(2000, 1, 1, tzinfo=UTC),
            14,
            datetime(2001, 1, 1, tzinfo=UTC),
        ),
    ]
    frame = pl.DataFrame(rows, schema=schema, orient="row")
    engine = create_warehouse_engine(sqlite_url)
    with engine.begin() as conn:
        fast, plain = (create_stage(conn, deals, list(schema)) for _ in range(2))
        fill_stage(conn, fast, frame)
        conn.execute(plain.insert(), frame.to_dicts())
        stored = [conn.exec_driver_sql(f'SELECT * FROM "{t.name}" ORDER BY deal_id').all() for t in (fast, plain)]
        typed = [conn.execute(sa.select(t).order_by(t.c.deal_id)).all() for t in (fast, plain)]
    engine.dispose()
    assert stored[0] == stored[1]
    assert [tuple(map(type, row)) for row in stored[0]] == [tuple(map(type, row)) for row in stored[1]]
    assert typed[0] == typed[1]


@pytest.mark.postgres
def test_postgres_copies_a_typed_frame_in_binary_exactly_as_sqlalchemy_binds_it(pg_url: str) -> None:
    """fill_stage sends a frame typed as its table in PostgreSQL's binary format: the same rows as
    SQLAlchemy's insert, nulls, empty text, the ends of each type and sub-second instants included."""
    from datetime import date
    from decimal import Decimal

    from sqlalchemy.dialects import postgresql
    from sqlalchemy.dialects.postgresql import JSONB

    from crm_assets.warehouse.bulk import _binary_types, fill_stage

    columns: dict[str, tuple[sa.types.TypeEngine[Any], pl.DataType]] = {
        "big": (sa.BigInteger(), pl.Int64()),
        "small": (sa.Integer(), pl.Int32()),
        "text": (sa.Text(), pl.String()),
        "short": (sa.String(64), pl.String()),
        "money": (sa.Numeric(18, 2), pl.Decimal(18, 2)),
        "day": (sa.Date(), pl.Date()),
        "instant": (sa.DateTime(timezone=True), pl.Datetime("us", "UTC")),
        "flag": (sa.Boolean(), pl.Boolean()),
    }
    table = sa.Table("typed", sa.MetaData(), *(sa.Column(name, kind) for name, (kind, _) in columns.items()))
    rows = [
        (
            -(2**63),
            -(2**31),
            "Ünïcode 'quoted', \\ \"x\"\n",
            "",
            Decimal("-9999999999999999.99"),
            date(1, 1, 1),
            datetime(1, 1, 1, tzinfo=UTC),
            True,
        ),
        (
            2**63 - 1,
            2**31 - 1,
            "",
            "a" * 64,
            Decimal("0.10"),
            date(9999, 12, 31),
            datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
            False,
        ),
        (0, 0, None, None, None, None, None, None),
        (
            7,
            1,
            "x",
            "y",
            Decimal("364820.50"),
            date(2024, 2, 29),
            datetime(2024, 4, 16, 5, 15, 0, 123, tzinfo=UTC),
            True,
        ),
    ]
    frame = pl.DataFrame(rows, schema={name: dtype for name, (_, dtype) in columns.items()}, orient="row")
    assert _binary_types(postgresql.dialect(), table, frame.schema) is not None
    engine = create_warehouse_engine(pg_url)
    with engine.begin() as conn:
        binary, plain = (table.to_metadata(sa.MetaData(), name=name) for name in ("binary", "plain"))
        for target in (binary, plain):
            target.create(conn)
        fill_stage(conn, binary, frame)
        conn.execute(plain.insert(), frame.to_dicts())
        stored = [conn.execute(sa.select(t).order_by(t.c.big)).all() for t in (binary, plain)]
        # Text for a number, or a column with no binary form here: CSV, which the server parses by its rules.
        texts = pl.DataFrame({"money": ["0.125"], "payload": ['{"a": 1}']})
        loose = sa.Table("loose", sa.MetaData(), sa.Column("money", sa.Numeric(18, 2)), sa.Column("payload", JSONB))
        assert _binary_types(postgresql.dialect(), loose, texts.schema) is None
        loose.create(conn)
        fill_stage(conn, loose, texts)
        parsed = conn.execute(sa.select(loose)).one()
    engine.dispose()
    assert stored[0] == stored[1] and len(stored[0]) == 4
    assert parsed == (Decimal("0.13"), {"a": 1})  # PostgreSQL rounds half away from zero, polars to even


def test_sqlite_reads_a_frame_exactly_as_sqlalchemy_types_it(sqlite_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """read_frame converts by column in polars what SQLAlchemy would convert value by value: the same frame,
    for what the warehouse writes (fill_stage, SQLAlchemy's insert) and for what SQL writes itself."""
    from decimal import Decimal

    from crm_assets.domains import DEALS
    from crm_assets.transform.clean import output_schema
    from crm_assets.warehouse.bulk import create_stage, fill_stage, read_frame

    deals, raw = CLEAN_TABLES["deals"], RAW_TABLES["deals"]
    schema = output_schema(DEALS)
    base = {"deal_name": "D", "probability_of_closure": "50%", "deal_stage": "Prospecting", "account_id": 7}
    values = [
        (Decimal("364820.50"), datetime(2024, 4, 16, 5, 15, 0, 123, tzinfo=UTC)),
        (Decimal("0.10"), datetime(1970, 1, 1, tzinfo=UTC)),
        (None, datetime(2099, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
        (Decimal("92233720368547.75"), datetime(2024, 2, 29, 12, tzinfo=UTC)),
        (Decimal("-12.00"), datetime(2001, 1, 1, 0, 0, 1, tzinfo=UTC)),
    ]
    rows = [
        base | {"deal_id": i, "deal_size": size, "created_at": at, "crm_id": 10 + i, "updated_at": at}
        for i, (size, at) in enumerate(values, start=1)
    ]
    frame = pl.DataFrame(rows, schema=schema)
    engine = create_warehouse_engine(sqlite_url)
    with engine.begin() as conn:
        fast, plain = (create_stage(conn, deals, list(schema)) for _ in range(2))
        fill_stage(conn, fast, frame.slice(0, 3))
        conn.execute(plain.insert(), frame.slice(3).to_dicts())
        written_by_sql = base | {"deal_id": 6, "deal_size": 5, "crm_id": 16}
        now, text = sa.func.current_timestamp(), sa.literal_column("'2024-05-01 08:30:00'", sa.String)  # no fraction
        conn.execute(plain.insert().values(**written_by_sql, created_at=now, updated_at=text))
        for stage in (fast, plain):
            query = sa.select(*(stage.c[c] for c in schema)).order_by(stage.c.deal_id)
            assert read_frame(conn, query, schema).rows() == typed_frame(conn, query, schema).rows()
        flags = create_stage(conn, raw, ["crm_id", "is_deleted", "synced_at"])
        conn.execute(flags.insert(), [{"crm_id": i, "is_deleted": i % 2 == 0, "synced_at": None} for i in range(3)])
        query = sa.select(flags.c.crm_id, flags.c.is_deleted, flags.c.synced_at).order_by(flags.c.crm_id)
        flag_schema: dict[str, pl.DataType] = {
            "crm_id": pl.Int64(),
            "is_deleted": pl.Boolean(),
            "synced_at": pl.Datetime("us", "UTC"),
        }
        assert read_frame(conn, query, flag_schema).rows() == [(0, True, None), (1, False, None), (2, True, None)]
    engine.dispose()
    assert not caplog.records, "what the warehouse writes is converted by column, never read again value by value"


@pytest.mark.parametrize(
    ("stored", "column"),
    [
        ("2024-01-02T03:04:05", "updated_at"),
        ("2024-01-02 03:04:05+05:00", "updated_at"),
        ("2024-01-02", "updated_at"),
        ("true", "is_deleted"),
        (0.5, "is_deleted"),
        (1e16, "deal_size"),  # beyond NUMERIC(18, 2): SQLAlchemy reads no value
    ],
)
def test_sqlite_reads_what_only_an_outside_tool_writes_as_sqlalchemy_does(
    sqlite_url: str, stored: object, column: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A value no warehouse writer stores fails the column-wise conversion: the query is read again
    through SQLAlchemy's types, the same frame as before that conversion existed, not an error."""
    from crm_assets.warehouse.bulk import create_stage, read_frame

    types = {"updated_at": pl.Datetime("us", "UTC"), "is_deleted": pl.Boolean(), "deal_size": pl.Decimal(18, 2)}
    like = CLEAN_TABLES["deals"] if column == "deal_size" else RAW_TABLES["deals"]
    engine = create_warehouse_engine(sqlite_url)
    with engine.begin() as conn:
        stage = create_stage(conn, like, ["crm_id", column])
        conn.exec_driver_sql(f'INSERT INTO "{stage.name}" VALUES (1, ?), (2, NULL)', (stored,))
        query = sa.select(stage.c.crm_id, stage.c[column]).order_by(stage.c.crm_id)
        schema = {"crm_id": pl.Int64(), column: types[column]}
        assert read_frame(conn, query, schema).rows() == typed_frame(conn, query, schema).rows()
    engine.dispose()
    assert "a value SQLite holds in an unexpected form" in caplog.text


def typed_frame(conn: sa.Connection, query: sa.Select[Any], schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """The query read through SQLAlchemy's types, into a frame as read_frame did before it converted by column."""
    rows = conn.execute(query).all()
    assert rows
    return pl.DataFrame({name: [row[i] for row in rows] for i, name in enumerate(schema)}, schema, strict=False)
