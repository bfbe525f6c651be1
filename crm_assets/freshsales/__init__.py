"""Freshsales (Freshworks CRM) API access: the client, its errors and its progress events."""

from crm_assets.freshsales.client import ClientStats, FreshsalesClient
from crm_assets.freshsales.errors import (
    CrmAuthError,
    CrmBadRequestError,
    CrmError,
    CrmListingIncompleteError,
    CrmNotFoundError,
    CrmPagingError,
    CrmPermissionError,
    CrmRateLimitError,
    CrmResponseError,
    CrmUnavailableError,
    CrmUnreachableError,
    CrmViewNotFoundError,
)
from crm_assets.freshsales.progress import ProgressEvent

__all__ = [
    "ClientStats",
    "CrmAuthError",
    "CrmBadRequestError",
    "CrmError",
    "CrmListingIncompleteError",
    "CrmNotFoundError",
    "CrmPagingError",
    "CrmPermissionError",
    "CrmRateLimitError",
    "CrmResponseError",
    "CrmUnavailableError",
    "CrmUnreachableError",
    "CrmViewNotFoundError",
    "FreshsalesClient",
    "ProgressEvent",
]
