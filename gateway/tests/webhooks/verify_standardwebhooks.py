"""Verifies captured webhook deliveries with the Standard Webhooks reference library for Python
(`pip install standardwebhooks`), independently of the gateway's own signing code.

Input (argv[1]): JSON lines {"secret": "whsec_...", "headers": {...}, "body": "..."}.
Exits 0 and prints the count when every delivery verifies; otherwise prints the first failure
and exits 1.
"""

import json
import sys

from standardwebhooks.webhooks import Webhook


def main() -> int:
    checked = 0
    with open(sys.argv[1], encoding="utf-8") as lines:
        for line in lines:
            delivery = json.loads(line)
            try:
                Webhook(delivery["secret"]).verify(delivery["body"], delivery["headers"])
            except Exception as error:  # the library raises WebhookVerificationError
                print(f"verification failed: {error}: {delivery['headers']}")
                return 1
            checked += 1
    print(f"verified {checked}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
