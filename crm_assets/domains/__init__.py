"""CRM domains, in load order (a domain comes after the domains its foreign keys point to).

Custom field names differ between Freshsales accounts: `CRM_FIELD_MAP` may name a JSON file that maps,
per domain, columns to other Freshsales fields, e.g. `{"accounts": {"region": "custom_field.cf_territory"}}`.
"""

import json
import os
from pathlib import Path

from crm_assets.domains.accounts import ACCOUNTS
from crm_assets.domains.base import Column, ColumnType, Domain, ForeignKey
from crm_assets.domains.contacts import CONTACTS
from crm_assets.domains.deals import DEALS

DEFAULT_DOMAINS: tuple[Domain, ...] = (ACCOUNTS, CONTACTS, DEALS)


def load_field_map(path: str | os.PathLike[str]) -> dict[str, dict[str, str]]:
    """Read and check a field-map file; the error names the file and what is wrong with it."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"CRM_FIELD_MAP: cannot read {path} as JSON: {exc}") from None
    known = {d.name for d in DEFAULT_DOMAINS}
    if not isinstance(data, dict) or not all(
        isinstance(m, dict) and all(isinstance(v, str) for v in m.values()) for m in data.values()
    ):
        raise ValueError(f'CRM_FIELD_MAP: {path} must look like {{"deals": {{"deal_size": "amount"}}}}')
    if unknown := set(data) - known:
        raise ValueError(f"CRM_FIELD_MAP: {path} names unknown domains {sorted(unknown)}; known: {sorted(known)}")
    return data


def configured_domains(field_map: dict[str, dict[str, str]] | None = None) -> tuple[Domain, ...]:
    """The domains with the tenant's field map applied (from CRM_FIELD_MAP when not given)."""
    if field_map is None:
        path = os.environ.get("CRM_FIELD_MAP")
        field_map = load_field_map(path) if path else {}
    return tuple(d.with_sources(field_map.get(d.name, {})) for d in DEFAULT_DOMAINS)


DOMAINS: tuple[Domain, ...] = configured_domains()
DOMAINS_BY_NAME: dict[str, Domain] = {d.name: d for d in DOMAINS}


def get_domain(name: str) -> Domain:
    try:
        return DOMAINS_BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown domain {name!r}; known domains: {', '.join(DOMAINS_BY_NAME)}") from None


__all__ = [
    "ACCOUNTS",
    "CONTACTS",
    "DEALS",
    "DOMAINS",
    "DOMAINS_BY_NAME",
    "Column",
    "ColumnType",
    "Domain",
    "ForeignKey",
    "configured_domains",
    "get_domain",
    "load_field_map",
]
