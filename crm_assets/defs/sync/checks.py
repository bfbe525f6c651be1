"""Asset checks on the clean tables, derived from the domain declarations, and one per raw table on the
CRM fields the domain reads.

The database constraints already refuse bad rows; these checks make the guarantees visible in the UI
and catch drift in databases that were loaded by other means.
"""

from collections.abc import Callable
from typing import Any

import dagster as dg
import sqlalchemy as sa

from crm_assets.contracts import CRM_POOL
from crm_assets.domains import ColumnType, Domain, configured_domains
from crm_assets.freshsales.errors import CrmError
from crm_assets.resources import CrmResource, WarehouseResource
from crm_assets.warehouse.drift import drift_message, missing_in_field_settings
from crm_assets.warehouse.schema import CLEAN_TABLES

Probe = Callable[[sa.Table], sa.Select[Any]]


def _check(domain: Domain, name: str, description: str, probe: Probe, what: str) -> dg.AssetChecksDefinition:
    """A check that passes when `probe` (a SELECT of offending values) returns no rows."""

    @dg.asset_check(asset=dg.AssetKey(domain.name), name=name, description=description)
    def check(warehouse: WarehouseResource) -> dg.AssetCheckResult:
        table = CLEAN_TABLES[domain.name]
        with warehouse.get_engine().connect() as conn:
            offending = conn.execute(probe(table).limit(20)).scalars().all()
            count = conn.execute(sa.select(sa.func.count()).select_from(probe(table).subquery())).scalar_one()
        return dg.AssetCheckResult(
            passed=count == 0,
            metadata={
                "offending_rows": count,
                "examples": dg.MetadataValue.json([str(v) for v in offending]),
            },
            description=f"{count} {what}" if count else None,
        )

    return check


def _unique_key(domain: Domain) -> dg.AssetChecksDefinition:
    key = domain.business_key

    def probe(t: sa.Table) -> sa.Select[Any]:
        return sa.select(t.c[key]).group_by(t.c[key]).having(sa.func.count() > 1)

    return _check(domain, f"unique_{key}", f"{key} is unique", probe, f"duplicated {key} values")


def _not_null(domain: Domain) -> dg.AssetChecksDefinition:
    required = [c.name for c in domain.columns if not c.nullable]

    def probe(t: sa.Table) -> sa.Select[Any]:
        return sa.select(t.c.crm_id).where(sa.or_(*(t.c[c].is_(None) for c in required)))

    return _check(domain, "required_columns_present", f"no NULL in {', '.join(required)}", probe, "rows with NULLs")


def _enum_domain(domain: Domain, column: str, choices: tuple[str, ...]) -> dg.AssetChecksDefinition:
    def probe(t: sa.Table) -> sa.Select[Any]:
        return sa.select(t.c[column]).where(t.c[column].not_in(choices)).distinct()

    return _check(
        domain,
        f"{column}_in_domain",
        f"{column} is one of {', '.join(choices)}",
        probe,
        f"unknown {column} labels",
    )


def _foreign_key(domain: Domain, column: str, target_domain: str, target_column: str) -> dg.AssetChecksDefinition:
    def probe(t: sa.Table) -> sa.Select[Any]:
        target = CLEAN_TABLES[target_domain]
        missing = ~sa.exists().where(target.c[target_column] == t.c[column])  # an anti-join at any size
        return sa.select(t.c[column]).where(t.c[column].is_not(None), missing).distinct()

    return _check(
        domain,
        f"{column}_references_{target_domain}",
        f"every {column} exists in {target_domain}.{target_column}",
        probe,
        f"{column} values with no {target_domain} row",
    )


def build_checks(domain: Domain) -> list[dg.AssetChecksDefinition]:
    checks = [_unique_key(domain), _not_null(domain)]
    checks += [_enum_domain(domain, c.name, c.choices) for c in domain.columns if c.type is ColumnType.ENUM]
    checks += [_foreign_key(domain, fk.column, fk.domain, fk.target_column) for fk in domain.foreign_keys]
    return checks


def clean_checks() -> list[dg.AssetChecksDefinition]:
    return [check for domain in configured_domains() for check in build_checks(domain)]


def mapped_fields_in_crm(domain: Domain) -> dg.AssetChecksDefinition:
    """On the raw asset, so it runs (and tells why) even when the clean step refuses drifted records."""

    @dg.asset_check(
        asset=dg.AssetKey(domain.raw_asset),
        name="mapped_fields_in_crm",
        description=f"every field the {domain.name} columns are read from is still in the CRM's field settings",
        pool=CRM_POOL,
    )
    def check(context: dg.AssetCheckExecutionContext, crm: CrmResource) -> dg.AssetCheckResult:
        try:
            # The run's logger: the demo CRM note then shows once a run, not once more per check on stderr.
            with crm.get_client(context.log) as client:
                settings = client.field_settings(domain.entity)
        except CrmError as exc:
            raise dg.Failure(description=f"{domain.raw_asset} mapped_fields_in_crm: {exc}") from None
        missing = missing_in_field_settings(domain, settings)
        return dg.AssetCheckResult(
            passed=not missing,
            metadata={
                "missing_fields": dg.MetadataValue.json({m.column: m.source for m in missing}),
                "crm_fields": len(settings),
            },
            description=drift_message(domain, missing, "is no longer in the CRM's field settings") if missing else None,
        )

    return check


def crm_field_checks() -> list[dg.AssetChecksDefinition]:
    """One per configured domain: the fields its field map names."""
    return [mapped_fields_in_crm(domain) for domain in configured_domains()]
