"""CRM domains, in load order (a domain comes after the domains its foreign keys point to)."""

from crm_assets.domains.accounts import ACCOUNTS
from crm_assets.domains.base import Column, ColumnType, Domain, ForeignKey
from crm_assets.domains.contacts import CONTACTS
from crm_assets.domains.deals import DEALS

DOMAINS: tuple[Domain, ...] = (ACCOUNTS, CONTACTS, DEALS)
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
    "get_domain",
]
