"""Paystack's transaction API, the side KeyRelay calls: start a payment (`initialize`) and
ask how it went (`verify`). Paystack's side, the signed `charge.success` webhook, is
credits.py. The API base is a setting (KEYRELAY_PAYSTACK_API_BASE) so tests talk to a fake
Paystack server (tests/fake_paystack.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote

import urllib3

_TIMEOUT = urllib3.Timeout(connect=5.0, read=20.0)


class PaystackError(Exception):
    """A call Paystack refused or did not answer; the message can be shown to the payer."""


@dataclass(frozen=True)
class Checkout:
    """A started payment: send the payer to `authorization_url`."""

    authorization_url: str
    access_code: str
    reference: str


@dataclass(frozen=True)
class Transaction:
    """What `verify` says of a payment (`status` is `success` once it is paid)."""

    reference: str
    status: str
    amount: int
    currency: str
    email: str | None
    metadata: object

    @property
    def paid(self) -> bool:
        return self.status == "success"


class Paystack:
    """A client of one Paystack account (its secret key)."""

    def __init__(self, api_base: str, secret: str) -> None:
        self.api_base, self._secret = api_base.rstrip("/"), secret
        self._http = urllib3.PoolManager(retries=False, timeout=_TIMEOUT)

    @classmethod
    def from_config(cls, config: Mapping) -> Paystack | None:
        """The client of KEYRELAY_PAYSTACK_*, or None when no secret key is set."""
        secret = config.get("PAYSTACK_SECRET")
        return (
            cls(config.get("PAYSTACK_API_BASE") or "https://api.paystack.co", secret)
            if secret
            else None
        )

    def initialize(
        self, email: str, amount: int, callback_url: str, metadata: dict | None = None
    ) -> Checkout:
        """Start a payment of `amount` (the currency's smallest unit, e.g. cents)."""
        body = {"email": email, "amount": int(amount), "callback_url": callback_url}
        if metadata:
            body["metadata"] = metadata
        data = self._call("POST", "/transaction/initialize", body)
        try:
            return Checkout(data["authorization_url"], data["access_code"], data["reference"])
        except (KeyError, TypeError):
            raise PaystackError("Paystack's answer names no payment page.") from None

    def verify(self, reference: str) -> Transaction:
        """How the payment of a reference went."""
        data = self._call("GET", f"/transaction/verify/{quote(reference, safe='')}")
        try:
            customer = data.get("customer") or {}
            return Transaction(
                reference=str(data["reference"]),
                status=str(data["status"]),
                amount=int(data["amount"]),
                currency=str(data.get("currency") or ""),
                email=customer.get("email"),
                metadata=data.get("metadata"),
            )
        except (AttributeError, KeyError, TypeError, ValueError):
            raise PaystackError("Paystack's answer does not describe the payment.") from None

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        """Paystack's `data` of a `{"status": true, ...}` answer; its message otherwise."""
        headers = {"Authorization": f"Bearer {self._secret}", "Accept": "application/json"}
        try:
            response = self._http.request(
                method, f"{self.api_base}{path}", json=body, headers=headers
            )
        except urllib3.exceptions.HTTPError:
            raise PaystackError("Paystack cannot be reached. Try again later.") from None
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise PaystackError(f"Paystack answered {response.status} without JSON.")
        if response.status != 200 or answer.get("status") is not True:
            message = answer.get("message") or f"status {response.status}"
            raise PaystackError(f"Paystack refused: {message}.")
        data = answer.get("data")
        if not isinstance(data, dict):
            raise PaystackError("Paystack's answer holds no data.")
        return data
