"""Checks of a webhook where it is set (a submit, an API key), and the secret that signs it.

At submit the URL must be an absolute https URL (http for an allow-listed host) whose host
leads to public addresses only, or to allow-listed ones; and there must be a secret to sign
with: the API key's own, else the deployment's ``--webhook-secret``. A webhook is never sent
unsigned, so without either the submit is refused (422 ``webhook_unsigned``).
"""

from __future__ import annotations

from comfy_balancer.auth.keys import KeyStore
from comfy_shared.access import Caller
from comfy_shared.errors import ComfyStackError
from comfy_shared.models import TaskRecord
from comfy_shared.net_guard import AllowList, UrlRefused, parse_target, resolve_target


class InvalidWebhookUrl(ComfyStackError):
    pass


class WebhookUnsigned(ComfyStackError):
    def __init__(self) -> None:
        super().__init__(
            "no secret to sign this webhook with: this API key has none, and the balancer has "
            "no --webhook-secret"
        )


class WebhookGuard:
    def __init__(self, *, allow: AllowList, deployment_secret: str | None, keys: KeyStore) -> None:
        self._allow = allow
        self._deployment_secret = deployment_secret
        self._keys = keys

    async def check_url(self, url: str) -> None:
        """Raises InvalidWebhookUrl for a URL that may not be called (form or addresses)."""
        try:
            await resolve_target(parse_target(url, self._allow), self._allow)
        except UrlRefused as exc:
            raise InvalidWebhookUrl(f"webhook_url: {exc}") from None

    async def check_submit(self, url: str | None, caller: Caller) -> None:
        """The webhook a task of ``caller`` gets (``url`` or the key's) may be called and
        signed; raises InvalidWebhookUrl or WebhookUnsigned."""
        effective = url or caller.webhook_url
        if effective is None:
            return
        await self.check_url(effective)
        if not caller.signs_webhooks and self._deployment_secret is None:
            raise WebhookUnsigned()

    async def secret_of(self, record: TaskRecord) -> str | None:
        """The secret that signs the task's webhooks: its key's own, else the deployment's."""
        if record.key_id is not None:
            secret = await self._keys.webhook_secret(record.key_id)
            if secret is not None:
                return secret
        return self._deployment_secret
