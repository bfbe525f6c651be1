"""Deals moving through their stages: a share of the open deals takes its next stage, as sales teams do.

Prospecting moves to Negotiation; Negotiation closes, won or lost. Which deals move, and how each
closes, depends only on the seed and the data; the update stamps a later `updated_at` (the demo CRM's
clock), so two syncs around an advance leave real history behind.
"""

from __future__ import annotations

import random
from typing import Any

from crm_assets.demo_crm.store import BadRequest, DemoStore
from crm_assets.domains.deals import DEAL_STAGES
from crm_assets.domains.demo import normalize_label

NEXT_STAGES: dict[str, tuple[str, ...]] = {
    "Prospecting": ("Negotiation",),
    "Negotiation": ("Closed-Won", "Closed-Lost"),
}
_CANONICAL = {normalize_label(s): s for s in DEAL_STAGES}


def advance_deals(store: DemoStore, fraction: float, seed: int = 0) -> list[int]:
    """Move that share of all deals (those open and live among them) one stage on; returns their CRM ids."""
    if not 0 <= fraction <= 1:
        raise BadRequest("fraction must be between 0 and 1")
    ids = store.crm_ids("deals")
    rng = random.Random(seed)
    moved = []
    for crm_id in sorted(rng.sample(ids, round(fraction * len(ids)))):
        following = NEXT_STAGES.get(_stage(store.get("deals", crm_id)) or "")
        if following:
            store.update("deals", crm_id, {"custom_field": {"cf_deal_stage": rng.choice(following)}})
            moved.append(crm_id)
    return moved


def _stage(record: dict[str, Any]) -> str | None:
    if record.get("is_deleted"):
        return None
    return _CANONICAL.get(normalize_label((record.get("custom_field") or {}).get("cf_deal_stage")) or "")
