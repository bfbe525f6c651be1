"""CRM domains, in load order (a domain comes after the domains its foreign keys point to).

Custom field names differ between Freshsales accounts: `CRM_FIELD_MAP` may name a JSON file that maps,
per domain, columns to other Freshsales fields, e.g. `{"accounts": {"region": "custom_field.cf_territory"}}`.
A field map changes only where a column is read from: the domains, their names, columns and the warehouse
schema are those declared in DEFAULT_DOMAINS. `configured_domains()` reads the map on its first call.
"""

import json
import os
from functools import cache
from pathlib import Path

from crm_assets import settings
from crm_assets.domains.accounts import ACCOUNTS
from crm_assets.domains.base import Column, ColumnType, Domain, ForeignKey
from crm_assets.domains.contacts import CONTACTS
from crm_assets.domains.deals import DEALS
from crm_assets.settings import SettingsError


def in_load_order(domains: tuple[Domain, ...]) -> tuple[Domain, ...]:
    """`domains`, once each foreign key is known to point to the business key of a domain declared before
    it, with the key's own type: the cleaning pipeline matches and marks references by those keys' values
    (a surrogate id or a narrower type would orphan valid rows or fail a load). Raises ValueError naming it."""
    names = [d.name for d in domains]
    if twice := sorted({name for name in names if names.count(name) > 1}):
        raise ValueError(f"domains listed twice: {twice}")
    earlier: dict[str, Domain] = {}
    for domain in domains:
        for fk in domain.foreign_keys:
            where = f"domain {domain.name!r}: foreign key {fk.column!r}"
            target = earlier.get(fk.domain)
            if target is None:
                raise ValueError(f"{where} points to {fk.domain!r}, {_why_not_earlier(fk.domain, domain, names)}")
            if fk.target_column != target.business_key:
                raise ValueError(
                    f"{where} must point to {fk.domain}'s business key {target.business_key!r}, "
                    f"not {fk.target_column!r}"
                )
            key_type = target.column(target.business_key).type
            if domain.column(fk.column).type is not key_type:
                raise ValueError(f"{where} must have the type of {fk.domain}.{target.business_key}, {key_type.value}")
        earlier[domain.name] = domain
    return domains


def _why_not_earlier(referenced: str, domain: Domain, names: list[str]) -> str:
    if referenced == domain.name:
        return "its own domain, which the cleaning pipeline does not support"
    if referenced not in names:
        return f"which is not a domain of the list {names}"
    return "which must be listed before it (load order)"


DEFAULT_DOMAINS: tuple[Domain, ...] = in_load_order((ACCOUNTS, CONTACTS, DEALS))
# Fixed by the declarations, whatever the field map: for choices and dependencies built at import.
DOMAIN_NAMES: tuple[str, ...] = tuple(d.name for d in DEFAULT_DOMAINS)


def load_field_map(path: str | os.PathLike[str]) -> dict[str, dict[str, str]]:
    """Read and check a field-map file; the error names the file and what is wrong with it."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise SettingsError(f"CRM_FIELD_MAP: cannot read {path} as JSON: {exc}") from None
    known = set(DOMAIN_NAMES)
    if not isinstance(data, dict) or not all(
        isinstance(m, dict) and all(isinstance(v, str) for v in m.values()) for m in data.values()
    ):
        raise SettingsError(f'CRM_FIELD_MAP: {path} must look like {{"deals": {{"deal_size": "amount"}}}}')
    if unknown := set(data) - known:
        raise SettingsError(f"CRM_FIELD_MAP: {path} names unknown domains {sorted(unknown)}; known: {sorted(known)}")
    return data


def apply_field_map(field_map: dict[str, dict[str, str]]) -> tuple[Domain, ...]:
    """The declared domains with some columns read from other Freshsales fields."""
    return tuple(d.with_sources(field_map.get(d.name, {})) for d in DEFAULT_DOMAINS)


@cache
def configured_domains() -> tuple[Domain, ...]:
    """The domains with the tenant's field map (CRM_FIELD_MAP) applied, read once per process.

    Tests that change the variable call `configured_domains.cache_clear()`.
    """
    path = settings.field_map_path()
    if not path:
        return apply_field_map({})
    try:
        return apply_field_map(load_field_map(path))
    except SettingsError:
        raise
    except ValueError as exc:  # a column the map names, or a field path it gives, the declarations refuse
        raise SettingsError(f"CRM_FIELD_MAP: {path}: {exc}") from None


def referencing(domain: Domain) -> list[tuple[Domain, ForeignKey]]:
    """Every configured domain whose rows point to `domain`'s rows, with the foreign key that does."""
    return [(child, fk) for child in configured_domains() for fk in child.foreign_keys if fk.domain == domain.name]


def get_domain(name: str) -> Domain:
    for domain in configured_domains():
        if domain.name == name:
            return domain
    raise KeyError(f"unknown domain {name!r}; known domains: {', '.join(DOMAIN_NAMES)}")


__all__ = [
    "ACCOUNTS",
    "CONTACTS",
    "DEALS",
    "DEFAULT_DOMAINS",
    "DOMAIN_NAMES",
    "Column",
    "ColumnType",
    "Domain",
    "ForeignKey",
    "apply_field_map",
    "configured_domains",
    "get_domain",
    "in_load_order",
    "load_field_map",
    "referencing",
]
