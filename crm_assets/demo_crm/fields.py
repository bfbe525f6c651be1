"""`GET /api/settings/<entity>/fields`: the field metadata of the demo CRM's entities."""

from __future__ import annotations

from typing import Any

from crm_assets.demo_crm.data import INDUSTRIES, LEAD_SOURCES, PROBABILITY_LABELS, REGIONS, STAGES

# (name, label, type, is_custom, choices)
_FieldSpec = tuple[str, str, str, bool, tuple[str, ...]]
_FIELDS: dict[str, tuple[_FieldSpec, ...]] = {
    "sales_accounts": (
        ("name", "Name", "text", False, ()),
        ("website", "Website", "text", False, ()),
        ("owner_id", "Sales owner", "dropdown", False, ()),
        ("cf_account_id", "Account ID", "number", True, ()),
        ("cf_industry", "Industry", "dropdown", True, INDUSTRIES),
        ("cf_account_value", "Account value", "number", True, ()),
        ("cf_region", "Region", "dropdown", True, REGIONS),
        ("cf_tier", "Tier", "text", True, ()),
    ),
    "contacts": (
        ("first_name", "First name", "text", False, ()),
        ("last_name", "Last name", "text", False, ()),
        ("email", "Email", "email", False, ()),
        ("job_title", "Job title", "text", False, ()),
        ("external_id", "External ID", "text", False, ()),
        ("cf_lead_source", "Lead source", "dropdown", True, LEAD_SOURCES),
        ("cf_last_contacted_date", "Last contacted date", "date", True, ()),
    ),
    "deals": (
        ("name", "Name", "text", False, ()),
        ("amount", "Deal value", "number", False, ()),
        ("deal_stage_id", "Deal stage", "dropdown", False, STAGES),
        ("cf_deal_id", "Deal ID", "number", True, ()),
        ("cf_probability_of_closure", "Probability of closure", "dropdown", True, PROBABILITY_LABELS),
        ("cf_deal_stage", "Stage", "dropdown", True, STAGES),
        ("cf_account_id", "Account ID", "number", True, ()),
        ("cf_competitor", "Competitor", "text", True, ()),
    ),
}


def settings_fields(entity: str) -> list[dict[str, Any]]:
    base = {"sales_accounts": 17_000_001_000, "contacts": 17_000_002_000, "deals": 17_000_003_000}[entity]
    return [
        {
            "id": base + n,
            "name": name,
            "label": label,
            "type": kind,
            "default": not custom,
            "required": name in ("name", "last_name"),
            "choices": [{"id": base + 100 * (n + 1) + k, "value": v} for k, v in enumerate(choices)],
        }
        for n, (name, label, kind, custom, choices) in enumerate(_FIELDS[entity])
    ]
