"""Azure OpenAI: the OpenAI chat-completions API, addressed by deployment instead of model."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from gateway.providers.base import ApiCall, ChatCall, UpstreamError
from gateway.providers.openai_compat import OpenAICompatProvider
from gateway.providers.upstream_http import DEFAULT_MAX_RESPONSE_BYTES, DEFAULT_MAX_SSE_EVENT_CHARS


class AzureOpenAIProvider(OpenAICompatProvider):
    """Chat completions at `{endpoint}/openai/deployments/{deployment}/chat/completions`.

    `deployments` maps the catalogue's upstream model to the Azure deployment serving it.
    Streamed usage needs an `api_version` that knows `stream_options` (2024-09-01-preview
    and later, or the 2024-10-21 GA); older versions reject the request.
    """

    def __init__(
        self,
        *,
        name: str,
        endpoint: str,
        api_key: str,
        api_version: str,
        deployments: dict[str, str],
        timeout_s: float,
        transport: httpx.AsyncBaseTransport | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        max_event_chars: int = DEFAULT_MAX_SSE_EVENT_CHARS,
    ) -> None:
        assert api_version, "Azure OpenAI needs an api-version"
        assert deployments and all(deployments.values()), "every model needs a named deployment"
        # Azure keys go in `api-key`; a Bearer header is for Entra ID tokens only.
        super().__init__(
            name=name,
            base_url=f"{endpoint.rstrip('/')}/openai",
            api_key="",
            timeout_s=timeout_s,
            transport=transport,
            headers={"api-key": api_key},
            params={"api-version": api_version},
            max_response_bytes=max_response_bytes,
            max_event_chars=max_event_chars,
        )
        self._deployments = dict(deployments)

    def _path(self, call: ChatCall) -> str:
        return self._deployment_path(call.upstream_model, "chat/completions")

    def _api_path(self, call: ApiCall) -> str:
        return self._deployment_path(call.upstream_model, call.api)

    def _api_body(self, call: ApiCall, *, stream: bool) -> dict[str, Any]:
        body = super()._api_body(call, stream=stream)
        del body["model"]  # the deployment in the URL picks the model
        return body

    def _deployment_path(self, upstream_model: str, api: str) -> str:
        deployment = self._deployments.get(upstream_model)
        if deployment is None:
            # A catalogue/settings mismatch, not the caller's fault; no request was sent, so
            # status 0, and http_4xx because retrying the same call cannot succeed.
            raise UpstreamError(
                0,
                "http_4xx",
                f"provider {self.name!r} has no Azure deployment for model {upstream_model!r}",
            )
        return f"/deployments/{quote(deployment, safe='')}/{api}"

    def _body(self, call: ChatCall, *, stream: bool) -> dict[str, Any]:
        body = super()._body(call, stream=stream)
        # The deployment in the URL picks the model; Azure does not want it in the body.
        del body["model"]
        return body
