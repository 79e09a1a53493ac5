"""Wallets: fund, allocate down the tree, refund, correct, set overdraft limits and
budgets, read balances. Funding, org → team allocations, refunds, corrections, limits
and budgets are for org admins; a tenant admin may allocate its teams' money to keys."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from gateway import errors
from gateway.admin import requests
from gateway.admin.context import AdminContext, Guard
from gateway.admin.principals import Principal
from gateway.admin.requests import ID_MAX_CHARS
from gateway.errors import GatewayError
from schemas.http_errors import json_response
from schemas.money import format_usd, usd_to_nanousd
from schemas.records import (
    Event,
    WalletAllocated,
    WalletBudgetSet,
    WalletCorrected,
    WalletFunded,
    WalletLimitSet,
    WalletRefunded,
)
from streams.quotas import logic as quotas_logic
from streams.wallets import logic as wallets_logic
from streams.wallets.logic import team_wallet_id


def thresholds_of(value: Any) -> tuple[int, ...]:
    """Budget thresholds as given: absent (the defaults), a list of whole percentages or
    their comma-separated text; whether they are usable is `quotas.logic.budget_set`'s
    call. ValueError for anything else."""
    if value is None:
        return quotas_logic.DEFAULT_THRESHOLDS_PERCENT
    if isinstance(value, str):
        parts = [part.strip() for part in value.split(",")]
        if not all(part.isdigit() for part in parts):
            raise ValueError(f"'thresholds' must be whole percentages, e.g. 50,80,100: {value!r}")
        return tuple(int(part) for part in parts)
    if isinstance(value, list) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        return tuple(value)
    raise ValueError("'thresholds' must be a list of whole percentages")


class WalletRoutes:
    """The wallet routes, on the admin API's context."""

    def __init__(self, context: AdminContext) -> None:
        self.context = context

    def routes(self, guard: Guard) -> list[web.RouteDef]:
        """The wallet routes."""
        return [
            web.post("/v1/admin/wallets/fund", guard(self.fund_wallet)),
            web.get("/v1/admin/wallets/balance", guard(self.balance)),
            web.post("/v1/admin/wallets/budget", guard(self.set_budget)),
            web.post("/v1/admin/wallets/allocate", guard(self.allocate)),
            web.post("/v1/admin/wallets/refund", guard(self.refund)),
            web.post("/v1/admin/wallets/correct", guard(self.correct)),
            web.post("/v1/admin/wallets/limit", guard(self.set_limit)),
        ]

    def _wallet_target(self, principal: Principal, data: Mapping[str, Any]) -> str:
        """The wallet a request names: `wallet_id`, or `tenant` (default: the principal's,
        else the gateway's) with `team` and `key` (none: the org wallet). Another tenant's
        wallet is answered with 404."""
        named = data.get("wallet_id")
        if named is not None:
            if (
                not isinstance(named, str)
                or len(named) > 3 * ID_MAX_CHARS + 2
                or not wallets_logic.is_wallet_id(named)
            ):
                raise GatewayError(
                    errors.INVALID_REQUEST,
                    "'wallet_id' must be tenant, tenant/team or tenant/team/key_id",
                )
            wallet_id = named
        else:
            fields = dict(data)
            tenant = requests.identifier(
                fields, "tenant", principal.tenant_id or self.context.default_tenant
            )
            if fields.get("team") is None:
                if fields.get("key") is not None:
                    raise GatewayError(errors.INVALID_REQUEST, "'key' needs its 'team'")
                wallet_id = wallets_logic.org_wallet_id(tenant)
            elif fields.get("key") is None:
                wallet_id = team_wallet_id(tenant, requests.identifier(fields, "team"))
            else:
                wallet_id = wallets_logic.key_wallet_id(
                    tenant, requests.identifier(fields, "team"), requests.identifier(fields, "key")
                )
        if not principal.sees(wallets_logic.tenant_of(wallet_id)):
            raise GatewayError(errors.NOT_FOUND, f"no wallet {wallet_id}")
        return wallet_id

    def _check_transfer(self, source_id: str, amount_nanousd: int) -> None:
        """Refuse a transfer the source cannot cover as this gateway sees it: balance plus
        overdraft limit, minus what this gateway committed that the balance does not show.
        (The wallets processor decides again, on the published journal.)"""
        available = self.context.budget.available_nanousd(source_id)
        if amount_nanousd > available:
            raise GatewayError(
                errors.TRANSFER_REJECTED,
                f"wallet {source_id} cannot cover a transfer of {format_usd(amount_nanousd)} "
                f"USD (available {format_usd(available)} USD including its overdraft limit)",
            )

    def _seen(self, wallet_id: str, record: Event) -> bool:
        wallet = self.context.views.wallets.get(wallet_id)
        return wallet is not None and wallet.applied_seqs.get(record.producer_id, 0) >= record.seq

    async def _transfer_status(self, sealed: Event, source_id: str, dest_id: str | None) -> str:
        """accepted, rejected, or pending (this gateway has not seen the decision yet)."""
        await self.context.wait_until(lambda: self._seen(source_id, sealed))
        source = self.context.views.wallets.get(source_id)
        if source is None or not self._seen(source_id, sealed):
            return "pending"
        if source.last_decided_event_id == sealed.event_id:
            decision = source.last_decision
        elif dest_id is not None:
            # Another transfer out of the source was decided since: the child tells.
            await self.context.wait_until(lambda: self._seen(dest_id, sealed))
            decision = "accepted" if self._seen(dest_id, sealed) else "rejected"
        else:
            decision = "accepted" if source.last_event_id == sealed.event_id else "pending"
        if decision == wallets_logic.REJECTED:
            raise GatewayError(
                errors.TRANSFER_REJECTED,
                f"the wallets processor rejected transfer {sealed.event_id}: wallet "
                f"{source_id} would go below its overdraft limit",
            )
        if dest_id is not None and decision == wallets_logic.ACCEPTED:
            await self.context.wait_until(lambda: self._seen(dest_id, sealed))
        return decision

    async def fund_wallet(self, request: web.Request, principal: Principal) -> web.Response:
        """Credit a wallet with an exact USD amount (org admins only): the org wallet of
        `tenant`, or a team's (`team`) or key's (`team`, `key`), or `wallet_id`."""
        if principal.role != "org-admin":
            raise GatewayError(errors.FORBIDDEN, "only an org admin may fund wallets")
        data = await requests.read_body(request)
        wallet_id = self._wallet_target(principal, data)
        amount = requests.amount(data, sign=1)
        record = WalletFunded(
            **self.context.envelope(WalletFunded, wallets_logic.tenant_of(wallet_id)),
            wallet_id=wallet_id,
            team_id=wallets_logic.team_of(wallet_id),
            amount_nanousd=amount,
            memo=str(data.get("memo", ""))[:512],
            funded_by=principal.identity,
        )
        sealed = await self.context.publish(record)
        # Answer once this gateway's view has the credit, so the next call can spend it.
        await self.context.wait_until(lambda: self._seen(wallet_id, sealed))
        return json_response(
            {"event_id": sealed.event_id, "wallet_id": record.wallet_id, "amount_nanousd": amount},
            status=201,
        )

    async def allocate(self, request: web.Request, principal: Principal) -> web.Response:
        """Move money down the tree, from a wallet to one of its children: org → team (org
        admins), team → key (also a tenant admin of that tenant). The child is named like
        any wallet (`team`, `key`, or `wallet_id`); `from_wallet_id`, if given, must be its
        parent. 409 transfer_rejected if the parent cannot cover it."""
        data = await requests.read_body(request)
        to_wallet = self._wallet_target(principal, data)
        parent = wallets_logic.parent_wallet_id(to_wallet)
        if parent is None:
            raise GatewayError(
                errors.INVALID_REQUEST, "an org wallet has no parent to allocate from; fund it"
            )
        named_from = data.get("from_wallet_id")
        if named_from is not None and named_from != parent:
            raise GatewayError(
                errors.INVALID_REQUEST,
                f"money moves from a wallet to its child only: {to_wallet} is a child of {parent}",
            )
        path = wallets_logic.path_of(to_wallet)
        if len(path) == 2 and principal.role != "org-admin":
            raise GatewayError(
                errors.FORBIDDEN, "only an org admin may allocate from the org wallet to a team"
            )
        if len(path) == 3:
            key = self.context.views.keys.get(path[2])
            if key is None or (key.tenant_id, key.team_id) != path[:2]:
                raise GatewayError(errors.NOT_FOUND, f"no key {path[2]} in team {path[1]}")
        amount = requests.amount(data, sign=1)
        self._check_transfer(parent, amount)
        record = WalletAllocated(
            **self.context.envelope(WalletAllocated, path[0]),
            from_wallet_id=parent,
            to_wallet_id=to_wallet,
            team_id=wallets_logic.team_of(to_wallet),
            amount_nanousd=amount,
            memo=requests.text(data, "memo"),
            allocated_by=principal.identity,
        )
        sealed = await self.context.publish(record)
        status = await self._transfer_status(sealed, parent, to_wallet)
        return json_response(
            {
                "event_id": sealed.event_id,
                "from_wallet_id": parent,
                "to_wallet_id": to_wallet,
                "amount_nanousd": amount,
                "status": status,
            },
            status=201,
        )

    async def refund(self, request: web.Request, principal: Principal) -> web.Response:
        """Credit a call's charge back to a wallet (org admins only): `call_event_id` names
        the call, `usd` the amount; the settlement itself stays as it was."""
        if principal.role != "org-admin":
            raise GatewayError(errors.FORBIDDEN, "only an org admin may refund")
        data = await requests.read_body(request)
        wallet_id = self._wallet_target(principal, data)
        call_event_id = requests.identifier(data, "call_event_id")
        amount = requests.amount(data, sign=1)
        record = WalletRefunded(
            **self.context.envelope(WalletRefunded, wallets_logic.tenant_of(wallet_id)),
            wallet_id=wallet_id,
            team_id=wallets_logic.team_of(wallet_id),
            amount_nanousd=amount,
            call_event_id=call_event_id,
            reason=requests.text(data, "reason"),
            refunded_by=principal.identity,
        )
        sealed = await self.context.publish(record)
        await self.context.wait_until(lambda: self._seen(wallet_id, sealed))
        return json_response(
            {
                "event_id": sealed.event_id,
                "wallet_id": wallet_id,
                "call_event_id": call_event_id,
                "amount_nanousd": amount,
            },
            status=201,
        )

    async def correct(self, request: web.Request, principal: Principal) -> web.Response:
        """A signed correction entry (org admins only): `usd` (negative debits),
        `entry_event_id` (the entry corrected) and a `reason`. No entry is ever edited. A
        debit the wallet cannot cover is 409 transfer_rejected."""
        if principal.role != "org-admin":
            raise GatewayError(errors.FORBIDDEN, "only an org admin may correct wallets")
        data = await requests.read_body(request)
        wallet_id = self._wallet_target(principal, data)
        entry_event_id = requests.identifier(data, "entry_event_id")
        amount = requests.amount(data, sign=-1)
        reason = requests.text(data, "reason", required=True)
        if amount < 0:
            self._check_transfer(wallet_id, -amount)
        record = WalletCorrected(
            **self.context.envelope(WalletCorrected, wallets_logic.tenant_of(wallet_id)),
            wallet_id=wallet_id,
            team_id=wallets_logic.team_of(wallet_id),
            amount_nanousd=amount,
            entry_event_id=entry_event_id,
            reason=reason,
            corrected_by=principal.identity,
        )
        sealed = await self.context.publish(record)
        if amount < 0:
            status = await self._transfer_status(sealed, wallet_id, None)
        else:
            await self.context.wait_until(lambda: self._seen(wallet_id, sealed))
            status = "accepted" if self._seen(wallet_id, sealed) else "pending"
        return json_response(
            {
                "event_id": sealed.event_id,
                "wallet_id": wallet_id,
                "entry_event_id": entry_event_id,
                "amount_nanousd": amount,
                "status": status,
            },
            status=201,
        )

    async def set_limit(self, request: web.Request, principal: Principal) -> web.Response:
        """Set how far below zero a wallet may go (org admins only): transfers out stop at
        minus the limit, and gateways admit calls against balance plus limit. 0 (every
        wallet's default) allows no overdraft."""
        if principal.role != "org-admin":
            raise GatewayError(errors.FORBIDDEN, "only an org admin may set overdraft limits")
        data = await requests.read_body(request)
        wallet_id = self._wallet_target(principal, data)
        limit = requests.amount(data, sign=0)
        record = WalletLimitSet(
            **self.context.envelope(WalletLimitSet, wallets_logic.tenant_of(wallet_id)),
            wallet_id=wallet_id,
            team_id=wallets_logic.team_of(wallet_id),
            overdraft_limit_nanousd=limit,
            set_by=principal.identity,
        )
        sealed = await self.context.publish(record)
        await self.context.wait_until(lambda: self._seen(wallet_id, sealed))
        return json_response(
            {
                "event_id": sealed.event_id,
                "wallet_id": wallet_id,
                "overdraft_limit_nanousd": limit,
                "overdraft_limit_usd": format_usd(limit),
            },
            status=201,
        )

    async def balance(self, request: web.Request, principal: Principal) -> web.Response:
        """A wallet's balance as the gateway's local view has it: `wallet_id`, or `tenant`
        with `team` and `key` (none: the org wallet)."""
        wallet_id = self._wallet_target(principal, dict(request.query))
        wallet = self.context.views.wallets.get(wallet_id) or wallets_logic.new_wallet(wallet_id)
        return json_response(
            {
                "wallet_id": wallet_id,
                "parent_wallet_id": wallets_logic.parent_wallet_id(wallet_id),
                "balance_nanousd": wallet.balance_nanousd,
                "balance_usd": format_usd(wallet.balance_nanousd),
                "funded_nanousd": wallet.funded_nanousd,
                "spent_nanousd": wallet.spent_nanousd,
                "allocated_in_nanousd": wallet.allocated_in_nanousd,
                "allocated_out_nanousd": wallet.allocated_out_nanousd,
                "refunded_nanousd": wallet.refunded_nanousd,
                "corrected_nanousd": wallet.corrected_nanousd,
                "overdraft_limit_nanousd": wallet.overdraft_limit_nanousd,
                "available_nanousd": self.context.budget.available_nanousd(wallet_id),
                "period_start_at": wallet.period_start_at,
                "period_spent_nanousd": wallet.period_spent_nanousd,
                "entry_count": wallet.entry_count,
                "rejected_count": wallet.rejected_count,
                "children": sorted(self.context.views.wallet_children.get(wallet_id, ())),
            }
        )

    async def set_budget(self, request: web.Request, principal: Principal) -> web.Response:
        """Give a team's wallet a monthly budget and alert thresholds (org admins only, as
        funding: budgets are FinOps). A usd of 0 removes the budget."""
        if principal.role != "org-admin":
            raise GatewayError(errors.FORBIDDEN, "only an org admin may set budgets")
        data = await requests.read_body(request)
        tenant = requests.identifier(data, "tenant", self.context.default_tenant)
        team = requests.identifier(data, "team")
        envelope = self.context.envelope(WalletBudgetSet, tenant)
        try:
            budget = quotas_logic.budget_set(
                wallet_id=team_wallet_id(tenant, team),
                tenant_id=tenant,
                team_id=team,
                budget_nanousd=usd_to_nanousd(data.get("usd", "")),
                occurred_at=envelope["occurred_at"],
                thresholds_percent=thresholds_of(data.get("thresholds")),
            )
        except ValueError as exc:
            raise GatewayError(errors.INVALID_REQUEST, str(exc)) from exc
        sealed = await self.context.publish(
            WalletBudgetSet(
                **envelope,
                wallet_id=budget.wallet_id,
                team_id=team,
                budget_nanousd=budget.budget_nanousd,
                thresholds_percent=budget.thresholds_percent,
                set_by=principal.identity,
            )
        )
        return json_response(
            {
                "event_id": sealed.event_id,
                "wallet_id": budget.wallet_id,
                "budget_nanousd": budget.budget_nanousd,
                "budget_usd": format_usd(budget.budget_nanousd),
                "thresholds_percent": list(budget.thresholds_percent),
            },
            status=201,
        )
