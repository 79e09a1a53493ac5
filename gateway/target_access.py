"""Which targets a key may reach: its scopes (models, providers, regions) and its tenant's
regions (data residency), over the whole catalogue (`/v1/models`) or one call's plan."""

from __future__ import annotations

from gateway import errors
from gateway.catalogue import Target
from gateway.errors import GatewayError
from gateway.routing import in_regions, parse_target_regions, parse_tenant_regions
from schemas.settings import GatewaySettings
from streams.keys.logic import Key


class TargetAccess:
    """The catalogue and the regions of its targets and tenants, as configured."""

    def __init__(self, settings: GatewaySettings, catalogue: dict[str, Target]) -> None:
        self.catalogue = catalogue
        self.region = settings.region
        self.target_regions = parse_target_regions(settings.target_regions)
        self.tenant_regions = parse_tenant_regions(settings.tenant_regions)

    def region_of(self, target: Target) -> str:
        """Where a target serves: its configured region, else this gateway's."""
        return self.target_regions.get(target.model, self.region)

    def usable(self, key: Key) -> list[Target]:
        """The catalogue's models the key's scopes and its tenant's regions allow."""
        tenant_regions = self.tenant_regions.get(key.tenant_id)
        resident = in_regions(
            list(self.catalogue.values()), self.target_regions, self.region, tenant_regions
        )
        return [
            t
            for t in resident
            if key.allows(model=t.model, provider=t.provider, region=self.region_of(t)) is None
        ]

    def allowed(self, key: Key, model: str, targets: list[Target]) -> list[Target]:
        """The targets the key's scopes and the tenant's regions allow, in order; refuses
        the call, naming the primary's reason, when none is left."""
        tenant_regions = self.tenant_regions.get(key.tenant_id)
        resident = in_regions(targets, self.target_regions, self.region, tenant_regions)
        allowed = [
            t
            for t in resident
            if key.allows(model=model, provider=t.provider, region=self.region_of(t)) is None
        ]
        if allowed:
            return allowed
        primary = targets[0]
        refused = key.allows(model=model, provider=primary.provider, region=self.region_of(primary))
        if refused == "model":
            raise GatewayError(errors.MODEL_NOT_ALLOWED, f"key may not call model '{model}'")
        if refused == "provider":
            raise GatewayError(
                errors.PROVIDER_NOT_ALLOWED, f"key may not use provider '{primary.provider}'"
            )
        raise GatewayError(
            errors.REGION_NOT_ALLOWED,
            f"no target for '{model}' in a region this key and tenant may use",
        )
