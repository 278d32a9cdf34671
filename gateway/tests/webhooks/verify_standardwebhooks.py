"""Verifies captured webhook deliveries with the Standard Webhooks reference library for Python
(`pip install standardwebhooks`), independently of the gateway's own signing code.

Input (argv[1]): JSON lines {"secret": "whsec_...", "headers": {...}, "body": "...",
"received_at": <Unix seconds>}. Each delivery is verified as the receiver would have verified it
on arrival: the library's clock reads `received_at`, so its check that `webhook-timestamp` lies
within five minutes of "now" applies to the moment the request came, not to the end of a long
run. Signatures, headers and the tolerance are all checked by the library's own code.
Exits 0 and prints the count when every delivery verifies; otherwise prints the first failure
and exits 1.
"""

import json
import sys
from datetime import datetime

import standardwebhooks.webhooks as library
from standardwebhooks.webhooks import Webhook


class ArrivalClock(datetime):
    """`datetime` whose `now()` is the current delivery's arrival time (when one is set)."""

    arrival = None

    @classmethod
    def now(cls, tz=None):
        if cls.arrival is None:
            return datetime.now(tz)
        return datetime.fromtimestamp(cls.arrival, tz=tz)


def main() -> int:
    library.datetime = ArrivalClock
    checked = 0
    with open(sys.argv[1], encoding="utf-8") as lines:
        for line in lines:
            delivery = json.loads(line)
            ArrivalClock.arrival = delivery.get("received_at")
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
