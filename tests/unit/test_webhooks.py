"""Standard Webhooks signing, verification, URL checks and delivery against a real local HTTP server."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import ssl
import time
from pathlib import Path

import httpx
import pytest

from conveyor import webhooks
from conveyor.webhooks import (
    ReplayGuard,
    WebhookDeliveryError,
    WebhookURLRefused,
    WebhookVerificationError,
    check_url,
    deliver,
    new_secret,
    sign,
    sign_headers,
    verify,
)
from tests.receiver import TLS_NAME, ReceiverServer, url_of

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
BODY = b'{"type":"order.completed","data":{"order_id":"ord_1"}}'


def test_signature_is_hmac_sha256_of_id_timestamp_body() -> None:
    expected = base64.b64encode(
        hmac.new(b"0123456789abcdef0123456789abcdef", b"msg_1.1700000000." + BODY, hashlib.sha256).digest()
    ).decode()
    assert sign(SECRET, "msg_1", 1700000000, BODY) == "v1," + expected


def test_new_secret_is_whsec_base64() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 24
    assert new_secret() != secret


def test_verify_accepts_own_signature_and_any_matching_v1() -> None:
    headers = sign_headers(SECRET, "msg_2", BODY)
    verify(SECRET, headers, BODY)
    headers["webhook-signature"] = "v1,AAAA " + headers["webhook-signature"] + " v2,xyz"
    verify(SECRET, {k.upper(): v for k, v in headers.items()}, BODY)  # header names are case-insensitive


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"body": BODY + b" "}, "signature"),
        ({"secret": new_secret()}, "signature"),
        ({"drop": "webhook-id"}, "missing"),
        ({"timestamp": "soon"}, "integer"),
        ({"age": 301}, "more than"),
        ({"age": -301}, "more than"),
    ],
)
def test_verify_refuses(change: dict[str, object], reason: str) -> None:
    now = time.time()
    ts = int(now - float(change.get("age", 0)))  # type: ignore[arg-type]
    headers = sign_headers(SECRET, "msg_3", BODY, timestamp=ts)
    if "timestamp" in change:
        headers["webhook-timestamp"] = str(change["timestamp"])
    if "drop" in change:
        del headers[str(change["drop"])]
    body = change.get("body", BODY)
    with pytest.raises(WebhookVerificationError, match=reason):
        verify(str(change.get("secret", SECRET)), headers, body, now=now)  # type: ignore[arg-type]


def test_replay_guard_refuses_a_remembered_id_within_the_window() -> None:
    guard = ReplayGuard(tolerance=300)
    headers = sign_headers(SECRET, "msg_4", BODY)
    verify(SECRET, headers, BODY, guard=guard)  # not yet processed: a retry is still welcome
    verify(SECRET, headers, BODY, guard=guard)
    guard.remember("msg_4", int(headers["webhook-timestamp"]))
    with pytest.raises(WebhookVerificationError, match="replay"):
        verify(SECRET, headers, BODY, guard=guard)
    later = time.time() + 10_000
    guard.remember("msg_5", later, now=later)  # forgets ids older than the window
    assert len(guard) == 1


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/hook",
        "http://localhost/hook",
        "http://10.1.2.3/",
        "http://192.168.0.10/",
        "http://172.16.0.1/",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:a9fe:a9fe]/",  # mapped 169.254.169.254, in hex
        "http://[64:ff9b::7f00:1]/",  # NAT64 to 127.0.0.1
        "http://[64:ff9b::a9fe:a9fe]/",  # NAT64 to the cloud metadata address
        "http://[64:ff9b:1::a00:1]/",  # local-use NAT64
        "http://[2002:a00:1::1]/",  # 6to4 from 10.0.0.1
        "http://[2002:c0a8:1::]/",  # 6to4 from 192.168.0.1
        "http://[::7f00:1]/",  # IPv4-compatible 127.0.0.1
        "http://[::10.0.0.1]/",  # IPv4-compatible, dotted
        "http://[2001:0:4136:e378:8000:63bf:f5ff:fffe]/",  # Teredo
        "http://0.0.0.0/",
        "ftp://93.184.216.34/",
        "http://user:pw@93.184.216.34/",
        "not a url",
    ],
)
def test_check_url_refuses_private_and_odd_urls(url: str) -> None:
    with pytest.raises(WebhookURLRefused):
        check_url(url)


def test_check_url_resolves_names_and_allows_private_only_when_told() -> None:
    assert check_url("https://93.184.216.34/hook") == "https://93.184.216.34/hook"
    assert check_url("https://hooks.example/x", resolve=lambda host, port: ["93.184.216.34"]) == "https://hooks.example/x"
    with pytest.raises(WebhookURLRefused, match="private"):
        check_url("https://rebound.example/x", resolve=lambda host, port: ["93.184.216.34", "10.0.0.5"])
    assert check_url("http://127.0.0.1:9/hook", allow_private=True) == "http://127.0.0.1:9/hook"
    with pytest.raises(WebhookURLRefused, match="10.0.0.5"):  # a name resolving to NAT64 of a private address
        check_url("https://rebound.example/x", resolve=lambda host, port: ["64:ff9b::a00:5"])
    assert check_url("http://[64:ff9b::5db8:d822]/") == "http://[64:ff9b::5db8:d822]/"  # NAT64 of a public address passes
    assert check_url("http://[2002:5db8:d822::1]/") == "http://[2002:5db8:d822::1]/"  # so does 6to4 of one


def test_deliver_posts_a_verifiable_message(receiver: ReceiverServer) -> None:
    payload = {"type": "order.completed", "data": {"order_id": "ord_9", "total": 8999}}
    result = deliver(url_of(receiver), SECRET, payload, msg_id="msg_9", allow_private=True)
    assert result.status_code == 204 and result.msg_id == "msg_9"
    headers, body = receiver.received[0]
    assert json.loads(body) == payload
    verify(SECRET, headers, body)


def test_deliver_refuses_private_urls_by_default(receiver: ReceiverServer) -> None:
    with pytest.raises(WebhookURLRefused):
        deliver(url_of(receiver), SECRET, {}, msg_id="msg_10")
    assert receiver.received == []


def test_deliver_raises_on_error_answers_with_retry_after(receiver: ReceiverServer) -> None:
    receiver.answers += [(500, {}), (429, {"Retry-After": "7"}), (301, {"Location": "http://10.0.0.1/"})]
    with pytest.raises(WebhookDeliveryError) as failed:
        deliver(url_of(receiver), SECRET, {}, msg_id="msg_11", allow_private=True)
    assert failed.value.status_code == 500 and failed.value.retry_after is None
    with pytest.raises(WebhookDeliveryError) as limited:
        deliver(url_of(receiver), SECRET, {}, msg_id="msg_11", allow_private=True)
    assert limited.value.status_code == 429 and limited.value.retry_after == 7.0
    with pytest.raises(WebhookDeliveryError, match="301"):  # redirects are not followed
        deliver(url_of(receiver), SECRET, {}, msg_id="msg_11", allow_private=True)
    assert len(receiver.received) == 3
    assert {h["webhook-id"] for h, _ in receiver.received} == {"msg_11"}


def test_deliver_raises_when_nobody_listens(receiver: ReceiverServer) -> None:
    url = url_of(receiver)
    receiver.shutdown()
    receiver.server_close()
    with pytest.raises(WebhookDeliveryError, match="Connect"):
        deliver(url, SECRET, {}, msg_id="msg_12", allow_private=True, timeout=2)


def test_secret_must_be_base64() -> None:
    with pytest.raises(webhooks.WebhookError, match="base64"):
        sign("whsec_not base64!", "m", 1, b"")


def test_delivery_connects_to_the_address_it_checked_with_the_name_in_host(receiver: ReceiverServer) -> None:
    lookups: list[str] = []

    def resolve(host: str, port: int) -> list[str]:  # answers once, as a rebinding name would, then elsewhere
        lookups.append(host)
        return ["127.0.0.1"] if len(lookups) == 1 else ["10.9.9.9"]

    port = receiver.server_address[1]
    sent = deliver(f"http://hooks.example.test:{port}/hook?x=1", SECRET, {"n": 1}, msg_id="msg_20", allow_private=True, resolve=resolve)
    assert sent.status_code == 204 and lookups == ["hooks.example.test"]  # resolved once: the checked address is the one used
    headers = {name.lower(): value for name, value in receiver.received[0][0].items()}
    assert headers["host"] == f"hooks.example.test:{port}"


def test_a_name_that_does_not_resolve_is_refused_at_registration_and_retried_at_delivery() -> None:
    def nowhere(host: str, port: int) -> list[str]:
        raise webhooks.WebhookHostUnresolved(f"//{host}", "cannot resolve host: temporary failure")

    with pytest.raises(WebhookURLRefused):
        check_url("https://gone.example.test/hook", resolve=nowhere)
    with pytest.raises(WebhookDeliveryError) as failed:
        deliver("https://gone.example.test/hook", SECRET, {}, msg_id="msg_21", resolve=nowhere)
    assert "cannot resolve" in str(failed.value)  # a failure the job retries, not a refusal it gives up on


def test_over_tls_the_certificate_is_checked_for_the_name_not_the_address(tls_receiver: tuple[ReceiverServer, Path]) -> None:
    server, cert = tls_receiver
    port = server.server_address[1]
    trusting = httpx.Client(verify=ssl.create_default_context(cafile=str(cert)), follow_redirects=False)
    with trusting:
        sent = deliver(f"https://{TLS_NAME}:{port}/hook", SECRET, {"n": 2}, msg_id="msg_22", allow_private=True,
                       client=trusting, resolve=lambda host, p: ["127.0.0.1"])
        assert sent.status_code == 204
        assert {name.lower(): value for name, value in server.received[0][0].items()}["host"] == f"{TLS_NAME}:{port}"
        with pytest.raises(WebhookDeliveryError):  # the same server under another name: its certificate does not match
            deliver(f"https://other.example.test:{port}/hook", SECRET, {}, msg_id="msg_23", allow_private=True,
                    client=trusting, resolve=lambda host, p: ["127.0.0.1"])


def test_delivery_tries_the_next_checked_address_when_one_refuses_the_connection(receiver: ReceiverServer) -> None:
    port = receiver.server_address[1]
    sent = deliver(f"http://hooks.example.test:{port}/hook", SECRET, {}, msg_id="msg_24", allow_private=True,
                   resolve=lambda host, p: ["::1", "127.0.0.1"])  # the receiver listens on IPv4 only
    assert sent.status_code == 204 and len(receiver.received) == 1
