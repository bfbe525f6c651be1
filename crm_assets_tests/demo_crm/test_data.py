"""The synthetic data: deterministic, well-formed, consistent views, and the promised dirt."""

from __future__ import annotations

import datetime
import re
from collections import Counter

import pytest

from crm_assets.demo_crm import DemoConfig, DemoCrm
from crm_assets.demo_crm.data import DEMO_DOMAINS, SyntheticData, entity_specs, is_member, record_facts
from crm_assets.domains.accounts import REGIONS
from crm_assets.domains.contacts import LEAD_SOURCES
from crm_assets.domains.deals import DEAL_STAGES as STAGES
from crm_assets.domains.demo import normalize_label
from crm_assets.timestamps import parse_instant
from crm_assets_tests.demo_crm.conftest import TODAY, client_for, small_config

ENTITIES = entity_specs(DEMO_DOMAINS)
STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d([+-]\d\d:\d\d|Z)$")
KEY_FIELD = {"sales_accounts": "cf_account_id", "deals": "cf_deal_id"}
CUSTOM_KEYS = {
    "sales_accounts": {"cf_account_id", "cf_industry", "cf_account_value", "cf_region", "cf_tier"},
    "contacts": {"cf_lead_source", "cf_last_contacted_date"},
    "deals": {"cf_deal_id", "cf_probability_of_closure", "cf_deal_stage", "cf_account_id", "cf_competitor"},
}


def test_same_config_gives_byte_identical_responses() -> None:
    bodies = []
    for _ in range(2):
        with client_for(DemoCrm(small_config())) as client:
            pages = [
                client.get(f"/api/{entity}/view/{view}", params={"page": 2, "per_page": 30}).content
                for entity, view in (("deals", 17_000_000_301), ("contacts", 17_000_000_201))
            ]
            pages.append(client.get("/api/sales_accounts/17000000005").content)
            bodies.append(pages)
    assert bodies[0] == bodies[1]


def test_another_seed_gives_other_data() -> None:
    first = DemoCrm(small_config()).get_record("deals", 17_200_000_010)
    other = DemoCrm(small_config(seed=8)).get_record("deals", 17_200_000_010)
    assert first != other


@pytest.mark.parametrize("entity", list(ENTITIES))
def test_records_are_well_formed(entity: str) -> None:
    data = SyntheticData(small_config(), TODAY)
    end = datetime.datetime(2025, 6, 1, tzinfo=datetime.UTC)
    start = end - datetime.timedelta(days=3 * 365.25)
    previous_updated = None
    for i in range(data.counts[entity]):
        record = data.record(entity, i)
        assert record["id"] == ENTITIES[entity].id_base + i and record["id"] > 2**32
        assert STAMP.match(record["created_at"]) and STAMP.match(record["updated_at"])
        created, updated = parse_instant(record["created_at"]), parse_instant(record["updated_at"])
        assert created is not None and updated is not None
        assert start <= created <= updated < end
        assert previous_updated is None or updated >= previous_updated  # monotonic: sort = index order
        previous_updated = updated
        assert set(record["custom_field"]) == CUSTOM_KEYS[entity]
        assert isinstance(record["is_deleted"], bool)
        if entity == "deals" and record["amount"] is not None:
            assert isinstance(record["amount"], str) and float(record["amount"]) > 0


def test_clean_data_has_no_dirt() -> None:
    demo_data = SyntheticData(small_config(dirty=False), TODAY)
    for i in range(demo_data.counts["deals"]):
        deal = demo_data.record("deals", i)
        assert deal["custom_field"]["cf_deal_stage"] in STAGES
        assert deal["custom_field"]["cf_deal_id"] == i + 1
        assert re.fullmatch(r"\d+\.0", deal["amount"])
        assert not deal["is_deleted"]
        assert 1001 <= deal["custom_field"]["cf_account_id"] < 1001 + demo_data.counts["sales_accounts"]
    for i in range(demo_data.counts["sales_accounts"]):
        assert demo_data.record("sales_accounts", i)["custom_field"]["cf_region"] in REGIONS


@pytest.mark.parametrize("entity", list(ENTITIES))
def test_view_membership_matches_the_record_fields(entity: str) -> None:
    """The cheap per-index facts that build the views agree with what the records say."""
    data = SyntheticData(small_config(accounts=300, contacts=600, deals=900), TODAY)
    for i in range(data.counts[entity]):
        from_index = data.facts(entity, i)
        from_record = record_facts(data.record(entity, i), ENTITIES[entity], from_index)
        for view in ENTITIES[entity].views:
            assert is_member(view, from_index, data.recent_ts) == is_member(view, from_record, data.recent_ts), (
                entity,
                i,
                view.name,
            )


def _dirt(data: SyntheticData) -> Counter[str]:
    """Counts each kind of dirt by looking at the records themselves, not at the generator's choice."""
    found: Counter[str] = Counter()
    labels: dict[str, tuple[str, tuple[str, ...]]] = {
        "sales_accounts": ("cf_region", REGIONS),
        "contacts": ("cf_lead_source", LEAD_SOURCES),
        "deals": ("cf_deal_stage", STAGES),
    }
    account_ids = set(range(1001, 1001 + data.counts["sales_accounts"]))
    for entity, (label_field, choices) in labels.items():
        canonical = {normalize_label(c) for c in choices}
        keys: Counter[str] = Counter()
        for i in range(data.counts[entity]):
            record = data.record(entity, i)
            custom = record["custom_field"]
            label = custom[label_field]
            key = (
                record["external_id"]
                if entity == "contacts"
                else custom.get("cf_account_id" if entity == "sales_accounts" else "cf_deal_id")
            )
            keys[str(key).removesuffix(".0")] += key is not None
            found[f"{entity}: deleted"] += record["is_deleted"]
            if isinstance(label, str) and label not in choices and normalize_label(label) in canonical:
                found[f"{entity}: odd casing"] += 1
            if isinstance(label, str) and normalize_label(label) not in canonical:
                found[f"{entity}: unknown label"] += 1
            values = [record.get("name"), record.get("email"), record.get("first_name"), *custom.values()]
            found[f"{entity}: missing"] += any(isinstance(v, str) and not v.strip() for v in values) or (
                entity != "contacts" and record["name"] is None
            )
            found[f"{entity}: numeric string"] += isinstance(key, str) and key.replace(".0", "").isdigit()
            found[f"{entity}: uncastable"] += "lots" in values or custom.get("cf_last_contacted_date") == (
                "sometime last week"
            )
            if entity == "deals":
                amount, account = record["amount"], custom["cf_account_id"]
                found["deals: null amount"] += amount is None
                found["deals: amount without decimals"] += amount is not None and "." not in amount
                found["deals: amount with 3 decimals"] += amount is not None and amount.endswith(".505")
                found["deals: orphan"] += isinstance(account, int) and account not in account_ids
                found["deals: in two views"] += data.facts(entity, i).view_dup
            if entity == "contacts":
                found["contacts: email only in emails list"] += record["email"] is None and bool(record["emails"])
            stamp = parse_instant(record["created_at"])
            assert stamp is not None
            local_date = datetime.date.fromisoformat(record["created_at"][:10])
            found["crosses UTC midnight"] += local_date != stamp.astimezone(datetime.UTC).date()
        found[f"{entity}: duplicate key"] = sum(1 for n in keys.values() if n > 1)
    return found


def test_default_size_has_every_kind_of_dirt() -> None:
    data = SyntheticData(DemoConfig(today=TODAY), TODAY)
    found = _dirt(data)
    expected = [
        f"{entity}: {kind}"
        for entity in ENTITIES
        for kind in (
            "deleted",
            "odd casing",
            "unknown label",
            "missing",
            "numeric string",
            "uncastable",
            "duplicate key",
        )
    ]
    expected += [
        "deals: null amount",
        "deals: amount without decimals",
        "deals: amount with 3 decimals",
        "deals: orphan",
        "deals: in two views",
        "contacts: email only in emails list",
        "crosses UTC midnight",
    ]
    missing = [kind for kind in expected if found[kind] == 0]
    assert not missing, f"no {missing} in {dict(found)}"
    # A few percent each, not a flood.
    assert all(found[kind] < 0.06 * 3000 for kind in expected if kind.startswith("deals"))


def test_dirty_false_has_none_of_it() -> None:
    found = _dirt(SyntheticData(DemoConfig(today=TODAY, dirty=False), TODAY))
    assert {k: v for k, v in found.items() if v and k != "crosses UTC midnight"} == {}
