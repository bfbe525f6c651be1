"""`GET /api/settings/<entity>/fields`: the field metadata of a demo CRM entity, from its domain's recipe."""

from __future__ import annotations

from typing import Any

from crm_assets.demo_crm.data import EntitySpec


def settings_fields(spec: EntitySpec) -> list[dict[str, Any]]:
    base = spec.settings_base
    return [
        {
            "id": base + n,
            "name": f.name,
            "label": f.label,
            "type": f.type,
            "default": not f.custom,
            "required": f.required,
            "choices": [{"id": base + 100 * (n + 1) + k, "value": v} for k, v in enumerate(f.choices)],
        }
        for n, f in enumerate(spec.recipe.fields)
    ]
