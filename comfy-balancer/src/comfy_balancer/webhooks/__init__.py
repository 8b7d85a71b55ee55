"""Webhooks: a task's end announced to a URL, signed as Standard Webhooks, delivered durably.

- ``signing``: secrets (``whsec_...``) and the ``webhook-*`` headers.
- ``outbox``: the Redis outbox (filled by the write that ends a task:
  ``comfy_shared.webhook_outbox``), claimed with a lease so two replicas never send the same
  attempt, and the dead letters.
- ``schedule``: what an attempt's outcome leads to (pure): delivered, again later, given up.
- ``delivery``: the loop every replica runs: claim what is due, check the URL again
  (``comfy_shared.net_guard``), send to the checked address, record the outcome.
- ``submit``: the checks at submit (URL, a secret to sign with); ``routes``: the dead letters.
"""
