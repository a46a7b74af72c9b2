"""Checks the requests the HTTP sink sent with the official Standard Webhooks verifier.

Usage: verify.py CAPTURED.json

CAPTURED.json holds {"secrets": [...], "hmac_secret": "...", "hmac_header": "...",
"hmac": {"header": "...", "algorithm": "...", "encoding": "hex" | "base64", "prefix": "..."},
"messages": [{"scheme": "standard-webhooks" | "hmac-sha256" | "hmac", "body": "...",
"headers": {...}}]}.
Every standard-webhooks message must verify with each secret (hookbridge signs with all of them
during a rotation), must fail with a wrong secret, and must fail once its body is tampered with;
every hmac-sha256 message must carry sha256=<hex HMAC of the body>, and every hmac message the
prefix and the HMAC of the body as "hmac" describes, computed here by hmac and hashlib. Exits 1
on the first failure.
"""

import base64
import hashlib
import hmac
import json
import sys

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

WRONG_SECRET = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo="


def must_fail(webhook, body, headers, what):
    try:
        webhook.verify(body, headers)
    except WebhookVerificationError:
        return
    sys.exit(f"FAIL: {what} was accepted")


def expected_hmac(key, body, algorithm, encoding, prefix):
    digest = hmac.new(key, body.encode(), getattr(hashlib, algorithm)).digest()
    if encoding == "base64":
        return prefix + base64.b64encode(digest).decode()
    return prefix + digest.hex()


def check_hmac(n, key, body, headers, header, algorithm, encoding, prefix):
    expected = expected_hmac(key, body, algorithm, encoding, prefix)
    got = headers.get(header.lower())
    if not hmac.compare_digest(expected, got or ""):
        sys.exit(f"FAIL: message {n}: {header} is {got!r}, expected {expected!r}")
    tampered = expected_hmac(key, body + " ", algorithm, encoding, prefix)
    if hmac.compare_digest(tampered, got):
        sys.exit(f"FAIL: message {n}: {header} also matches a tampered body")


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        captured = json.load(f)
    checked = {"standard-webhooks": 0, "hmac-sha256": 0, "hmac": 0}
    for n, m in enumerate(captured["messages"]):
        body, headers = m["body"], m["headers"]
        if m["scheme"] == "standard-webhooks":
            for secret in captured["secrets"]:
                try:
                    Webhook(secret).verify(body, headers)
                except WebhookVerificationError as e:
                    sys.exit(f"FAIL: message {n} ({headers.get('webhook-id')}) does not verify: {e}")
            webhook = Webhook(captured["secrets"][0])
            tampered = body.replace('"', "'", 1) if '"' in body else body + " "
            must_fail(webhook, tampered, headers, f"message {n} with a tampered body")
            must_fail(webhook, body + "\n", headers, f"message {n} with a byte added")
            must_fail(Webhook(WRONG_SECRET), body, headers, f"message {n} with a wrong secret")
            other = dict(headers, **{"webhook-id": headers["webhook-id"] + "x"})
            must_fail(webhook, body, other, f"message {n} with another id")
        elif m["scheme"] == "hmac-sha256":
            key = captured["hmac_secret"].encode()
            check_hmac(n, key, body, headers, captured["hmac_header"], "sha256", "hex", "sha256=")
        else:
            key = captured["hmac_secret"].encode()
            h = captured["hmac"]
            check_hmac(n, key, body, headers, h["header"], h["algorithm"], h["encoding"], h["prefix"])
        checked[m["scheme"]] += 1
    print(
        f"verified {checked['standard-webhooks']} standard-webhooks, "
        f"{checked['hmac-sha256']} hmac-sha256 and {checked['hmac']} hmac messages; "
        "tampered bodies, other ids and a wrong secret were refused"
    )


if __name__ == "__main__":
    main()
