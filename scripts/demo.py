#!/usr/bin/env python3
"""The stack demo: two users with wallets, one funded through friendbot, a payment to the other,
followed until it reaches SUCCESS and then seen as the receiver's deposit. Talks to the gateway's
HTTP API only (standard library only).

    python3 scripts/demo.py --gateway http://127.0.0.1:8080 --api-key gwk_...
"""

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
import uuid


class Gateway:
    def __init__(self, base, api_key):
        self.base = base.rstrip("/")
        self.api_key = api_key

    def call(self, method, path, body=None):
        headers = {"Authorization": f"Bearer {self.api_key}", "x-request-id": f"demo-{uuid.uuid4().hex[:12]}"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if method == "POST":
            headers["Idempotency-Key"] = str(uuid.uuid4())
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")
            sys.exit(f"{method} {path} failed: {error.code} {detail}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--gateway", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--amount", default="25.5000000")
    args = parser.parse_args()
    gw = Gateway(args.gateway, args.api_key)
    run = uuid.uuid4().hex[:8]

    wallets = {}
    for name in ("alice", "bob"):
        user = gw.call("POST", "/v1/users", {"external_ref": f"demo-{name}-{run}"})
        wallet = gw.call("POST", f"/v1/users/{user['id']}/wallet")
        wallets[name] = wallet
        print(f"==> {name}: user {user['id']}, wallet {wallet['id']}, account {wallet['public_key']}")

    funded = gw.call("POST", f"/v1/wallets/{wallets['alice']['id']}/fund")
    print(f"==> alice funded through friendbot: {json.dumps(funded)}")

    payment = gw.call(
        "POST",
        "/v1/payments",
        {
            "source_wallet_id": wallets["alice"]["id"],
            "destination": wallets["bob"]["public_key"],
            "amount": args.amount,
            "memo": "stack demo",
        },
    )
    print(f"==> payment {payment['id']} accepted: {payment['status']}")

    deadline = time.monotonic() + 120
    while True:
        current = gw.call("GET", f"/v1/payments/{payment['id']}")
        if current["status"] in ("SUCCESS", "FAILED") or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    for step in current.get("history", []):
        print(f"    {step}")
    print(f"==> payment {current['status']}: tx {current.get('tx_hash')} in ledger {current.get('ledger')}")
    for name in ("alice", "bob"):
        balance = gw.call("GET", f"/v1/wallets/{wallets[name]['id']}/balance")
        print(f"==> {name} balance: {json.dumps(balance)}")
    if current["status"] != "SUCCESS":
        sys.exit(f"the payment ended {current['status']}: {json.dumps(current)}")

    # The ingester follows the ledgers: the payment shows up as bob's deposit, once.
    deadline = time.monotonic() + 60
    while True:
        deposits = gw.call("GET", f"/v1/wallets/{wallets['bob']['id']}/deposits")["deposits"]
        mine = [d for d in deposits if d.get("tx_hash") == current.get("tx_hash")]
        if mine or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    if len(mine) != 1 or mine[0]["amount"] != current["amount"] or mine[0].get("memo") != "stack demo":
        sys.exit(f"bob's deposit for the payment is not there once: {json.dumps(deposits)}")
    print(f"==> bob's deposit: {json.dumps(mine[0])}")


if __name__ == "__main__":
    main()
