"""An embedded, Freshsales-compatible demo CRM with deterministic synthetic data and fault injection.

Use it in process (`DemoCrm().transport()` with `DEMO_BASE_URL`; the default CRM when `CRM_BASE_URL`
is unset) or over HTTP (`crm_assets.demo_crm.server.serve_demo_crm`, `crm-assets demo-crm`).

API (paths under `/crm/sales`, `Authorization: Token token=<key>` required, see
docs/freshsales-api.md):

The entities, their views, ids and field settings come from the CRM domains (`crm_assets.domains`) and
the `DemoRecipe` each declares beside its `Domain` (`crm_assets.domains.demo`); `DemoCrm(domains=...)`
serves others.

- `GET /api/{sales_accounts|contacts|deals}/filters` -> `{"filters": [...]}` with stable ids.
  Views: the domain's own (All Accounts; All Contacts; Open/Won/Lost Deals), the recipe's others (My
  Accounts, My Contacts, New Contacts, My Deals, Recent Deals), and Recycle Bin for each entity.
- `GET /api/{entity}/view/{id}?page=1&per_page=25&sort=updated_at|created_at&sort_type=asc|desc`
  (defaults: page 1, per_page 25 clamped to `max_per_page`, sort updated_at desc; ties by id)
  -> `{"<entity>": [...], "meta": {"total_pages", "total"}}`; pages past the end are empty.
- `GET|PUT|DELETE /api/{entity}/{id}`, `DELETE /api/{entity}/{id}/forget`. GET/PUT answer
  `{"<singular>": {...}}` (soft-deleted records too, with `is_deleted: true`); PUT takes wrapped
  or unwrapped bodies, merges `custom_field` and bumps `updated_at`; DELETE and forget answer 204.
- `GET /api/lookup?q=&f=&entities=deal,contact` -> `{"deals": {"deals": [...]}}` (live records
  whose field's string form equals q).
- `POST /api/filtered_search/{deal|contact|sales_account}?page=&per_page=` with
  `{"filter_rule": [{"attribute", "operator", "value"}], "sort", "sort_type"}`; operators is,
  is_in, contains, is_after, is_before; attribute `deleted` selects soft-deleted records.
- `GET /api/selector/{owners|deal_stages|deal_pipelines}` (owners, plus the recipes' lists),
  `GET /api/settings/{entity}/fields`.
- Errors: `{"errors": {"code": <status>, "message": ["..."]}}` (400, 401, 404, 405, 429, 5xx).

Admin endpoints (no API key; under `/_demo/` at the server root or under `/crm/sales`):

- `POST /_demo/faults` body: Faults fields as JSON (omitted fields take their defaults, so `{}`
  clears every fault); `GET /_demo/faults` shows them.
- `POST /_demo/touch` `{"entity": "deals", "fraction": 0.01, "seed": 0}` -> `{"count", "ids"}`.
- `POST /_demo/advance` `{"fraction": 0.1, "seed": 0}` -> `{"count", "ids"}`: that share of the deals
  (the open, live ones among them) moves one stage on with a later `updated_at`.
- `GET /_demo/stats` -> request counts (total, by status, by endpoint) and record counts.
- `POST /_demo/clear_log` empties the request and PUT logs.
"""

from __future__ import annotations

import threading

from crm_assets.demo_crm.config import DEMO_API_KEY, DEMO_BASE_URL, DemoConfig, Faults, RequestRecord
from crm_assets.demo_crm.crm import DemoCrm

_embedded: DemoCrm | None = None
_embedded_lock = threading.Lock()


def embedded_demo_crm() -> DemoCrm:
    """The process-wide demo CRM (DemoConfig() defaults) used when CRM_BASE_URL is unset."""
    global _embedded
    with _embedded_lock:
        if _embedded is None:
            _embedded = DemoCrm(DemoConfig())
        return _embedded


__all__ = [
    "DEMO_API_KEY",
    "DEMO_BASE_URL",
    "DemoConfig",
    "DemoCrm",
    "Faults",
    "RequestRecord",
    "embedded_demo_crm",
]
