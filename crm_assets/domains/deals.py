"""Deals: opportunities with an account. Freshsales has no "All Deals" view, so three views list them."""

from typing import Any

from crm_assets.domains.accounts import FIRST_ACCOUNT_ID
from crm_assets.domains.base import Column, ColumnType, Domain, ForeignKey
from crm_assets.domains.demo import (
    Built,
    DemoRecipe,
    Dirt,
    Draw,
    Record,
    SettingsField,
    ViewKind,
    format_date,
    normalize_label,
    odd_case,
)

DEAL_STAGES = ("Prospecting", "Negotiation", "Closed-Won", "Closed-Lost")

# -- the demo CRM's deals --

PROBABILITY_LABELS = ("Low", "Medium", "High")
_PRODUCTS = ("Licenses", "Renewal", "Pilot", "Expansion", "Support Plan", "Hardware", "Training", "Upgrade")
PIPELINE_ID = 17_000_000_500
STAGE_IDS = {label: 17_000_000_501 + n for n, label in enumerate(DEAL_STAGES)}
STAGE_PROBABILITY = {"Prospecting": 20, "Negotiation": 60, "Closed-Won": 100, "Closed-Lost": 0}
_STAGE_BY_ID = {stage_id: label for label, stage_id in STAGE_IDS.items()}
_CANONICAL_STAGE = {normalize_label(label): label for label in DEAL_STAGES}
# Which of the views (Open, Won, Lost) lists a deal at a stage; unknown or missing stages count as open.
_VIEW_OF_STAGE = {"prospecting": 0, "negotiation": 0, "closed-won": 1, "closed-lost": 2}
_DAY = 86_400


def stage_view(label: object) -> int:
    """The index in DEALS.views of the view that lists a deal with this stage label."""
    return _VIEW_OF_STAGE.get(normalize_label(label) or "", 0)


def _stage(h1: int, kind: Dirt) -> str:
    if kind == Dirt.VIEW_DUP:
        return "Closed-Won"
    pick = (h1 >> 10) % 100
    return DEAL_STAGES[0 if pick < 30 else 1 if pick < 55 else 2 if pick < 80 else 3]


def _listed_in(h1: int, kind: Dirt) -> int:
    missing_stage = kind == Dirt.MISSING and (h1 >> 20) % 4 == 2
    return 0 if kind == Dirt.UNKNOWN or missing_stage else stage_view(_stage(h1, kind))


def _listed_in_record(record: Record) -> int:
    return stage_view((record.get("custom_field") or {}).get("cf_deal_stage"))


def _deal(d: Draw) -> Built:
    h1, h2, i, kind = d.h1, d.h2, d.i, d.kind
    label = _stage(h1, kind)
    stage: str | None = label
    deal_id: object = 1 + d.key_index
    name: str | None = f"{_PRODUCTS[h2 % len(_PRODUCTS)]} #{i + 1}"
    prob_label: str | None = PROBABILITY_LABELS[(h2 >> 4) % 3]
    n_accounts = d.world.count("accounts")
    account_index = (h2 >> 20) % n_accounts if n_accounts else 0
    account: object = FIRST_ACCOUNT_ID + account_index
    crm_account: int | None = d.world.crm_id("accounts", account_index) if n_accounts else None
    whole = 100 + (h2 >> 8) % 49_900
    amount: str | None = f"{whole * 10}.0"
    if kind == Dirt.MISSING:
        which = (h1 >> 20) % 4
        name = None if which == 0 else name
        prob_label = "" if which == 1 else prob_label
        stage = None if which == 2 else stage
        deal_id = None if which == 3 else deal_id
    elif kind == Dirt.CASING:
        stage = odd_case(label, h2 >> 40)
    elif kind == Dirt.UNKNOWN:
        stage = "Stalled"
    elif kind == Dirt.NUMSTR:
        suffix = ".0" if (h2 >> 40) & 1 else ""
        deal_id, account = f"{deal_id}{suffix}", f"{account}{suffix}"
    elif kind == Dirt.UNCASTABLE:
        deal_id = "lots"
    elif kind == Dirt.ORPHAN:
        account, crm_account = FIRST_ACCOUNT_ID + n_accounts + (h2 >> 44) % 1000, None
    elif kind == Dirt.AMOUNT_ODD:
        amount = f"{whole * 10}" if (h2 >> 40) & 1 else f"{whole * 10}.505"
    elif kind == Dirt.AMOUNT_NULL:
        amount = None
    known = label if stage == label or kind == Dirt.CASING else None
    closed = format_date(d.updated_ts) if known in ("Closed-Won", "Closed-Lost") else None
    fields = {
        "name": name,
        "amount": amount,
        "base_currency_amount": amount,
        "expected_close": format_date(d.created_ts + (30 + (h2 >> 52) % 150) * _DAY),
        "closed_date": closed,
        "probability": STAGE_PROBABILITY.get(known or "", 50),
        "deal_pipeline_id": PIPELINE_ID,
        "deal_stage_id": STAGE_IDS.get(known or ""),
        "stage_updated_time": d.updated_at,
        "sales_account_id": crm_account,
    }
    custom = {
        "cf_deal_id": deal_id,
        "cf_probability_of_closure": prob_label,
        "cf_deal_stage": stage,
        "cf_account_id": account,
        "cf_competitor": None,
    }
    return fields, custom


def _sync_stage(before: Record, record: Record) -> None:
    """Keep cf_deal_stage and deal_stage_id in step; a stage change stamps stage_updated_time."""
    custom = record["custom_field"]
    old_label = (before.get("custom_field") or {}).get("cf_deal_stage")
    if custom.get("cf_deal_stage") != old_label:
        record["deal_stage_id"] = STAGE_IDS.get(_CANONICAL_STAGE.get(normalize_label(custom["cf_deal_stage"])) or "")
    elif record.get("deal_stage_id") != before.get("deal_stage_id") and record["deal_stage_id"] in _STAGE_BY_ID:
        custom["cf_deal_stage"] = _STAGE_BY_ID[record["deal_stage_id"]]
    if custom.get("cf_deal_stage") != old_label or record.get("deal_stage_id") != before.get("deal_stage_id"):
        record["stage_updated_time"] = record["updated_at"]


def _stages() -> list[dict[str, Any]]:
    return [
        {
            "id": stage_id,
            "name": label,
            "position": n + 1,
            "forecast_type": "Closed" if label.startswith("Closed") else "Open",
            "deal_pipeline_id": PIPELINE_ID,
            "choice_type": 2 if label == "Closed-Won" else 3 if label == "Closed-Lost" else 1,
            "probability": STAGE_PROBABILITY[label],
        }
        for n, (label, stage_id) in enumerate(STAGE_IDS.items())
    ]


def _deal_stages() -> dict[str, Any]:
    return {"deal_stages": _stages()}


def _deal_pipelines() -> dict[str, Any]:
    pipeline = {"id": PIPELINE_ID, "name": "Default Pipeline", "position": 1, "is_default": True}
    return {"deal_pipelines": [{**pipeline, "deal_stages": _stages()}]}


DEMO = DemoRecipe(
    code=3,
    build=_deal,
    count=3000,
    dirt=(
        (Dirt.UNCASTABLE, 10),
        (Dirt.ORPHAN, 20),
        (Dirt.VIEW_DUP, 10),
        (Dirt.AMOUNT_ODD, 30),
        (Dirt.AMOUNT_NULL, 20),
    ),
    extra_views=(("My Deals", ViewKind.MINE), ("Recent Deals", ViewKind.RECENT)),
    listed_in=_listed_in,
    listed_in_record=_listed_in_record,
    on_update=_sync_stage,
    selectors={"deal_stages": _deal_stages, "deal_pipelines": _deal_pipelines},
    touch_field="name",
    fields=(
        SettingsField("name", "Name", "text", required=True),
        SettingsField("amount", "Deal value", "number"),
        SettingsField("deal_stage_id", "Deal stage", "dropdown", choices=DEAL_STAGES),
        SettingsField("cf_deal_id", "Deal ID", "number", custom=True),
        SettingsField(
            "cf_probability_of_closure", "Probability of closure", "dropdown", custom=True, choices=PROBABILITY_LABELS
        ),
        SettingsField("cf_deal_stage", "Stage", "dropdown", custom=True, choices=DEAL_STAGES),
        SettingsField("cf_account_id", "Account ID", "number", custom=True),
        SettingsField("cf_competitor", "Competitor", "text", custom=True),
    ),
)

DEALS = Domain(
    name="deals",
    entity="deals",
    singular="deal",
    views=("Open Deals", "Won Deals", "Lost Deals"),
    business_key="deal_id",
    description="Deals, one row per deal_id; every deal belongs to a loaded account.",
    columns=(
        Column("deal_id", ColumnType.BIGINT, "custom_field.cf_deal_id", description="Business key"),
        Column("deal_name", ColumnType.TEXT, "name"),
        Column("deal_size", ColumnType.DECIMAL, "amount", nullable=True),
        Column("probability_of_closure", ColumnType.TEXT, "custom_field.cf_probability_of_closure"),
        Column("deal_stage", ColumnType.ENUM, "custom_field.cf_deal_stage", choices=DEAL_STAGES),
        Column("account_id", ColumnType.BIGINT, "custom_field.cf_account_id"),
        Column("created_at", ColumnType.TIMESTAMP, "created_at"),
    ),
    foreign_keys=(ForeignKey("account_id", "accounts", "account_id"),),
    read_only=frozenset({"created_at"}),
    demo=DEMO,
)
