"""The official Standard Webhooks library (the `standardwebhooks` package from PyPI) on the other
side of hookbridge's signature::standard_webhooks, for tests/signature.rs.

Usage: official.py sign|verify REQUESTS.json

sign: REQUESTS.json is [{"secret": "...", "id": "...", "timestamp": N, "payload": "..."}]; prints
a JSON list of `Webhook(secret).sign(id, timestamp, payload)`, one per request.

verify: REQUESTS.json is [{"secret": "...", "payload": "...", "headers": {...}}]; each goes
through `Webhook(secret).verify(payload, headers)` at the machine's time. Prints the verdicts as a
JSON list ("accepted", or "refused: <reason>").
"""

import json
import sys
from datetime import datetime, timezone

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def sign(requests):
    return [
        Webhook(r["secret"]).sign(
            r["id"],
            datetime.fromtimestamp(r["timestamp"], tz=timezone.utc),
            r["payload"],
        )
        for r in requests
    ]


def verify(requests):
    verdicts = []
    for r in requests:
        try:
            Webhook(r["secret"]).verify(r["payload"], r["headers"], json_parse=False)
            verdicts.append("accepted")
        except WebhookVerificationError as e:
            verdicts.append(f"refused: {e}")
    return verdicts


def main():
    command, path = sys.argv[1], sys.argv[2]
    with open(path, encoding="utf-8") as f:
        requests = json.load(f)
    print(json.dumps(sign(requests) if command == "sign" else verify(requests)))


if __name__ == "__main__":
    main()
