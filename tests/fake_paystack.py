"""A loopback HTTP server that speaks Paystack's API, for the payment tests.

What KeyRelay calls, as Paystack answers it (https://paystack.com/docs/api/transaction/):
  POST /transaction/initialize        {email, amount, reference?, callback_url?, metadata?,
                                       currency?} with `Authorization: Bearer <secret key>`
                                      -> {"status": true, "message": "Authorization URL
                                       created", "data": {authorization_url, access_code,
                                       reference}}
  GET  /transaction/verify/{reference} -> {"status": true, "message": "Verification
                                       successful", "data": {status, reference, amount, ...}}
A refusal is `{"status": false, "message": ...}` with 400 (bad input, unknown reference) or
401 (no or wrong secret key).

What Paystack does besides answering: the `authorization_url` is this server's checkout
page; opening it (or `pay(reference)`) pays, and the page sends the browser to the
`callback_url` with `?trxref=…&reference=…`. `send_webhook` posts the signed
`charge.success` event (`x-paystack-signature`: hex HMAC-SHA512 of the raw body with the
secret key) to a URL, as many times as asked, as Paystack's retries do.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlencode, urlsplit

import urllib3

SECRET_KEY = "sk_test_0123456789abcdef0123456789abcdef01234567"
PAID_AT = "2026-11-23T12:00:00.000Z"
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def sign(raw: bytes, secret: str = SECRET_KEY) -> str:
    """Paystack's `x-paystack-signature` of a body."""
    return hmac.new(secret.encode(), raw, hashlib.sha512).hexdigest()


@dataclass
class Transaction:
    """One initialized transaction; `status` is `abandoned` until it is paid."""

    id: int
    reference: str
    access_code: str
    email: str
    amount: int
    currency: str
    callback_url: str | None
    metadata: object
    status: str = "abandoned"
    paid_at: str | None = None

    def data(self) -> dict:
        """The `data` of a verify answer and of the `charge.success` event (trimmed)."""
        return {
            "id": self.id,
            "domain": "test",
            "status": self.status,
            "reference": self.reference,
            "amount": self.amount,
            "currency": self.currency,
            "paid_at": self.paid_at,
            "channel": "card",
            "gateway_response": "Successful" if self.status == "success" else "Abandoned",
            "metadata": self.metadata,
            "customer": {"id": 84312, "email": self.email},
        }


@dataclass
class Recorded:
    method: str
    path: str
    body: object = None
    headers: dict = field(default_factory=dict)


class FakePaystack:
    """Paystack's transaction API on 127.0.0.1; `with FakePaystack() as paystack: ...`."""

    def __init__(self, secret_key: str = SECRET_KEY, currency: str = "USD") -> None:
        self.secret_key, self.currency = secret_key, currency
        self.transactions: dict[str, Transaction] = {}
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        self._http = urllib3.PoolManager(retries=False, timeout=10.0)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FakePaystack:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
        self._http.clear()

    # -- what Paystack's side does ---------------------------------------------------

    def initialize(self, body: dict) -> Transaction:
        """A new transaction from an initialize body already checked by the handler."""
        with self._lock:
            number = len(self.transactions) + 1
            reference = str(body.get("reference") or f"T{secrets.randbelow(10**15):015d}")
            transaction = Transaction(
                id=4_099_260_000 + number,
                reference=reference,
                access_code=secrets.token_hex(8),
                email=body["email"],
                amount=int(body["amount"]),
                currency=body.get("currency") or self.currency,
                callback_url=body.get("callback_url"),
                metadata=body.get("metadata"),
            )
            self.transactions[reference] = transaction
            return transaction

    def pay(self, reference: str) -> Transaction:
        """The customer pays: the transaction succeeds (once; paying again changes nothing)."""
        with self._lock:
            transaction = self.transactions[reference]
            if transaction.status != "success":
                transaction.status, transaction.paid_at = "success", PAID_AT
            return transaction

    def event(self, reference: str) -> bytes:
        """The raw `charge.success` body for a paid transaction."""
        transaction = self.transactions[reference]
        return json.dumps({"event": "charge.success", "data": transaction.data()}).encode()

    def send_webhook(self, url: str, reference: str, times: int = 1) -> list:
        """POST the signed `charge.success` of a paid transaction to `url`, `times` times;
        the answers (urllib3 responses)."""
        raw = self.event(reference)
        headers = {
            "Content-Type": "application/json",
            "x-paystack-signature": sign(raw, self.secret_key),
        }
        return [self._http.request("POST", url, body=raw, headers=headers) for _ in range(times)]

    def by_access_code(self, code: str) -> Transaction | None:
        return next((t for t in self.transactions.values() if t.access_code == code), None)


def _handler(paystack: FakePaystack) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet test output
            pass

        def do_POST(self) -> None:
            body = self._body()
            paystack.requests.append(Recorded("POST", self.path, body, dict(self.headers)))
            if urlsplit(self.path).path != "/transaction/initialize":
                return self._answer(404, {"status": False, "message": "Not found"})
            if not self._authorized():
                return None
            problem = _initialize_problem(body)
            if problem:
                return self._answer(400, {"status": False, "message": problem})
            if body.get("reference") and str(body["reference"]) in paystack.transactions:
                return self._answer(
                    400, {"status": False, "message": "Duplicate Transaction Reference"}
                )
            transaction = paystack.initialize(body)
            data = {
                "authorization_url": f"{paystack.base_url}/checkout/{transaction.access_code}",
                "access_code": transaction.access_code,
                "reference": transaction.reference,
            }
            return self._answer(
                200, {"status": True, "message": "Authorization URL created", "data": data}
            )

        def do_GET(self) -> None:
            path = urlsplit(self.path).path
            paystack.requests.append(Recorded("GET", self.path, None, dict(self.headers)))
            if path.startswith("/checkout/"):
                return self._checkout(path.removeprefix("/checkout/"))
            if not path.startswith("/transaction/verify/"):
                return self._answer(404, {"status": False, "message": "Not found"})
            if not self._authorized():
                return None
            transaction = paystack.transactions.get(path.removeprefix("/transaction/verify/"))
            if transaction is None:
                return self._answer(
                    400, {"status": False, "message": "Transaction reference not found"}
                )
            return self._answer(
                200,
                {"status": True, "message": "Verification successful", "data": transaction.data()},
            )

        def _checkout(self, access_code: str) -> None:
            """The hosted payment page: opening it pays, then back to the merchant."""
            transaction = paystack.by_access_code(access_code)
            if transaction is None:
                return self._answer(404, {"status": False, "message": "Not found"})
            paystack.pay(transaction.reference)
            if not transaction.callback_url:
                return self._answer(200, {"status": True, "message": "Payment successful"})
            query = urlencode({"trxref": transaction.reference, "reference": transaction.reference})
            separator = "&" if "?" in transaction.callback_url else "?"
            self.send_response(302)
            self.send_header("Location", f"{transaction.callback_url}{separator}{query}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None

        def _authorized(self) -> bool:
            expected = f"Bearer {paystack.secret_key}"
            if hmac.compare_digest(self.headers.get("Authorization", ""), expected):
                return True
            self._answer(401, {"status": False, "message": "Invalid key"})
            return False

        def _body(self) -> object:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                return json.loads(raw) if raw else {}
            except ValueError:
                return raw.decode("utf-8", "replace")

        def _answer(self, status: int, body: dict) -> None:
            raw = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

    return Handler


def _initialize_problem(body: object) -> str | None:
    """Paystack's message for an initialize body it refuses, else None."""
    if not isinstance(body, dict):
        return "Invalid JSON body"
    if not _EMAIL.match(str(body.get("email") or "")):
        return "Invalid Email Address Passed"
    amount = body.get("amount")
    if isinstance(amount, bool) or not re.fullmatch(r"[1-9][0-9]*", str(amount or "")):
        return "Invalid Amount Sent"
    return None
