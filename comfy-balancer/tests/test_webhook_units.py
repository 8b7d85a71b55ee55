"""Webhooks without processes: what an attempt's outcome leads to (a table), signatures
checked by a verifier written here from the published Standard Webhooks algorithm (and by
the README's own snippet), and the settings' help."""

import base64
import hashlib
import hmac
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from comfy_balancer.settings import BalancerSettings
from comfy_balancer.webhooks.schedule import (
    Delivered,
    GiveUp,
    NextStep,
    Outcome,
    TryAgain,
    next_step,
)
from comfy_balancer.webhooks.signing import (
    check_signing_secret,
    new_signing_secret,
    signed_headers,
)
from comfy_shared.settings import build_arg_parser

DELAYS_S = (5.0, 30.0, 120.0)
NO_JITTER = 0.0
STOP = "the receiver asked for no more deliveries"


def verify_standard_webhook(secret: str, headers: Mapping[str, str], body: bytes) -> bool:
    """The receiver's check, as the Standard Webhooks specification describes it."""
    key = base64.b64decode(secret.split("_", 1)[1])
    signed = b".".join(
        [headers["webhook-id"].encode(), headers["webhook-timestamp"].encode(), body]
    )
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(
        version == "v1" and hmac.compare_digest(value, expected)
        for version, _, value in (s.partition(",") for s in headers["webhook-signature"].split())
    )


@pytest.mark.parametrize(
    ("attempt", "outcome", "step"),
    [
        (1, Outcome(status=200), Delivered()),
        (4, Outcome(status=204), Delivered()),
        (1, Outcome(status=500), TryAgain(5.0, "answered 500")),
        (2, Outcome(status=302), TryAgain(30.0, "answered 302")),  # a redirect is not followed
        (3, Outcome(error="no answer within 10s"), TryAgain(120.0, "no answer within 10s")),
        (4, Outcome(status=503), GiveUp("attempt 4 answered 503; no attempt left")),
        (1, Outcome(status=410), GiveUp(f"answered 410 Gone: {STOP}")),
        (2, Outcome(status=404), TryAgain(30.0, "answered 404")),
    ],
)  # fmt: skip
def test_what_an_attempt_leads_to(attempt: int, outcome: Outcome, step: NextStep) -> None:
    assert next_step(attempt, outcome, DELAYS_S, jitter=lambda: NO_JITTER) == step


def test_waits_have_jitter_of_a_tenth_at_most() -> None:
    waits = {next_step(1, Outcome(status=500), DELAYS_S) for _ in range(200)}
    delays = [wait.delay_s for wait in waits if isinstance(wait, TryAgain)]
    assert len(delays) == 200
    assert all(4.5 <= delay <= 5.5 for delay in delays)
    assert max(delays) - min(delays) > 0.5  # spread out, not all at one moment


def test_a_signature_verifies_with_its_secret_only() -> None:
    secret, body = new_signing_secret(), b'{"type":"task.succeeded"}'
    headers = signed_headers(secret, "msg_t1_1", 1_700_000_000, body)

    assert headers["webhook-id"] == "msg_t1_1"
    assert headers["webhook-timestamp"] == "1700000000"
    assert verify_standard_webhook(secret, headers, body)
    assert not verify_standard_webhook(secret, headers, body + b" ")
    assert not verify_standard_webhook(new_signing_secret(), headers, body)


def test_a_known_signature() -> None:
    """A vector computed by hand: key = 24 bytes 0x01..0x18."""
    secret = "whsec_" + base64.b64encode(bytes(range(1, 25))).decode()
    body = b'{"a":1}'
    key = bytes(range(1, 25))
    expected = hmac.new(key, b"msg_1.1700000000." + body, hashlib.sha256).digest()

    headers = signed_headers(secret, "msg_1", 1_700_000_000, body)

    assert headers["webhook-signature"] == "v1," + base64.b64encode(expected).decode()


def test_a_new_secret_is_in_the_standard_form() -> None:
    secret = new_signing_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 24
    check_signing_secret(secret)


@pytest.mark.parametrize(
    "secret",
    ["abc", "whsec_!!!", "whsec_" + base64.b64encode(b"short").decode(), "sk_" + "A" * 40],
)
def test_a_malformed_secret_is_refused(secret: str) -> None:
    with pytest.raises(ValueError, match="webhook secret"):
        check_signing_secret(secret)


def test_the_readmes_verification_snippet_verifies_a_signature() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    snippet = next(
        block.removeprefix("python\n")
        for block in readme.split("```")
        if block.startswith("python\n") and "def verify(" in block
    )
    namespace: dict[str, Any] = {}
    exec(snippet, namespace)  # the README's own code, as a receiver would paste it
    secret, body = new_signing_secret(), b'{"type":"task.failed"}'
    headers = signed_headers(secret, "msg_t9_5", int(time.time()), body)

    assert namespace["verify"](secret, headers, body)
    assert not namespace["verify"](secret, headers, body[:-1])
    assert not namespace["verify"](new_signing_secret(), headers, body)


def test_the_help_shows_every_webhook_setting_with_its_variable() -> None:
    parser = build_arg_parser(BalancerSettings, prog="comfy-balancer", description="")
    text = " ".join(parser.format_help().split())  # argparse formats %: a stray one raises

    for flag in ("secret", "allow", "retry-delays-s", "timeout-s", "poll-s"):
        variable = f"COMFY_BALANCER_WEBHOOK_{flag.upper().replace('-', '_')}"
        assert f"--webhook-{flag}" in text
        assert variable in text
