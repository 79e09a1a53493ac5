"""What the command groups (`govledger/commands/`) share: the error a command reports, the
admin API client and its checked calls, files read for a command, times for people.

Kept light on purpose: `govledger --help` imports this module, so httpx is imported only
when a command makes a call."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from schemas.settings import CommonSettings

if TYPE_CHECKING:
    import httpx

ADMIN_TIMEOUT_S = 30.0


class CliError(Exception):
    """A failure to report on stderr with exit code 1."""


def admin_client(settings: CommonSettings) -> httpx.Client:
    """A client of the gateway's admin API with the admin token."""
    import httpx

    from govledger.admin_token import resolve_admin_token

    try:
        token = resolve_admin_token(settings, create=False)
    except FileNotFoundError as exc:
        raise CliError(str(exc)) from exc
    return httpx.Client(
        base_url=settings.gateway_url,
        headers={"Authorization": f"Bearer {token}"},
        timeout=ADMIN_TIMEOUT_S,
    )


def checked(response: httpx.Response) -> Any:
    """The response's JSON; a CliError naming the error code for a 4xx or 5xx."""
    try:
        data = response.json()
    except ValueError:
        data = {}
    if response.status_code >= 400:
        error = data.get("error", {}) if isinstance(data, dict) else {}
        raise CliError(
            f"{response.status_code} {error.get('code', '')}: {error.get('message', response.text)}"
        )
    return data


def request(client: httpx.Client, method: str, path: str, **kwargs: Any) -> Any:
    """One checked call to the gateway; a CliError when it cannot be reached."""
    import httpx

    try:
        return checked(client.request(method, path, **kwargs))
    except httpx.HTTPError as exc:
        raise CliError(
            f"cannot reach the gateway at {client.base_url}: {exc} (is `govledger up` running?)"
        ) from exc


def read_text(path: str) -> str:
    """A file a command was given; a CliError when it cannot be read."""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from exc


def when(epoch_ms: int | None) -> str:
    """An epoch-millisecond moment to the second, or `never`."""
    if epoch_ms is None:
        return "never"
    return datetime.fromtimestamp(epoch_ms / 1000, tz=UTC).isoformat(timespec="seconds")
