"""Re-pricing recorded calls: each call's cost from its token counts at the price in force
at its occurred_at (the list prices, then every PricePublished in the store), against
the cost the gateway recorded and charged (`govledger audit reprice`).

Replay charges wallets the recorded cost (streams.wallets.logic): what was charged is a
fact of the ledger. This check proves those charges are what the published prices say.
A call whose model has no price known here (the built-in sim models and an upstream
model priced by the gateway's catalogue default) is counted as unpriced, not judged.
v1/v2 records carry no token kinds: they are priced as plain tokens, as they were."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from replay.sources import PAGE_ROWS, ArrowReader, blobs, decoded, literal, paged, types_in
from schemas import codec
from schemas.pricing import LIST_PRICES, PriceBook, Usage, cost_nanousd, published_price
from schemas.records import LineageRecord, PricePublished

MAX_LISTED_MISMATCHES = 1_000


@dataclass(frozen=True, slots=True)
class Mismatch:
    """A call whose recorded cost is not its price."""

    event_id: str
    provider: str
    model: str
    occurred_at: int
    recorded_nanousd: int
    repriced_nanousd: int


@dataclass(slots=True)
class RepriceReport:
    """What re-pricing found."""

    checked: int = 0
    unpriced: int = 0
    mismatched: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)


def price_book(published: Iterable[PricePublished]) -> PriceBook:
    """The list prices, then each org-wide published price (a malformed one is skipped,
    as the gateways skip it)."""
    book = PriceBook(LIST_PRICES)
    for record in published:
        if record.tenant_id:
            continue
        try:
            book.add(published_price(record))
        except ValueError:
            continue
    return book


def usage_of(call: LineageRecord) -> Usage:
    """The counts a lineage record carries, by token kind."""
    return Usage(
        call.prompt_tokens,
        call.completion_tokens,
        cached_prompt_tokens=call.cached_prompt_tokens,
        cache_write_tokens=call.cache_write_tokens,
        audio_prompt_tokens=call.audio_prompt_tokens,
        image_prompt_tokens=call.image_prompt_tokens,
        reasoning_tokens=call.reasoning_tokens,
        audio_completion_tokens=call.audio_completion_tokens,
    )


def reprice_calls(calls: Iterable[LineageRecord], book: PriceBook, report: RepriceReport) -> None:
    """Add each call to the report (pure)."""
    for call in calls:
        if call.usage_source == "none":
            continue  # nothing came back from an upstream: nothing is charged
        price = book.price_at(call.provider, call.model_selected, call.occurred_at)
        if price is None:
            report.unpriced += 1
            continue
        report.checked += 1
        expected = cost_nanousd(price, usage_of(call))
        if expected != call.cost_nanousd:
            report.mismatched += 1
            if len(report.mismatches) < MAX_LISTED_MISMATCHES:
                report.mismatches.append(
                    Mismatch(
                        call.event_id,
                        call.provider,
                        call.model_selected,
                        call.occurred_at,
                        call.cost_nanousd,
                        expected,
                    )
                )


def reprice_store(
    read: ArrowReader, tenant_id: str | None = None, page_rows: int = PAGE_ROWS
) -> RepriceReport:
    """Every stored call (of one tenant, if given) re-priced, a page at a time."""
    published = decoded(read, "control_events", types_in([PricePublished.event_type_name]))
    book = price_book(p for p in published if isinstance(p, PricePublished))
    where = "usage_source != 'none'"
    if tenant_id is not None:
        where += f" AND tenant_id = {literal(tenant_id)}"
    report = RepriceReport()
    for page in paged(
        read, "producer_id, seq, raw FROM lineage", where, ("producer_id", "seq"), page_rows
    ):
        records = (codec.decode_as(raw, LineageRecord) for raw in blobs(page.column("raw")))
        reprice_calls(records, book, report)
    return report
