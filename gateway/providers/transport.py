"""What every provider module and the HTTP client share: the key an attempt uses, its
timeouts, and the one error a transport failure raises."""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.keys.scrub import Scrubber, scrubber
from gateway.policy import Outcome


@dataclass(frozen=True)
class Target:
    """The provider key an attempt uses, with its secret decrypted for this call only."""

    key_id: int
    provider: str
    base_url: str
    secret: str = field(repr=False)
    # The upstream serves OpenAI's Responses API as well as chat completions.
    responses_api: bool = False
    # The key's provider settings (ProviderKey.options), never secret.
    options: dict = field(default_factory=dict, hash=False, compare=False)
    # The client's headers an upstream may honour (gateway/proxy/client_headers.py); each
    # adapter sends on those of its kind's `forwarded_headers`.
    client_headers: dict = field(default_factory=dict, hash=False, compare=False)

    @property
    def scrub(self) -> Scrubber:
        """What takes this key's secret out of what its upstream says (gateway/keys/scrub.py)."""
        email = self.options.get("email")
        return scrubber(self.secret, email if isinstance(email, str) else "")


@dataclass
class Timeouts:
    """Seconds to connect and to wait for bytes from the upstream."""

    connect: float
    read: float


class TransportError(Exception):
    """The upstream could not be reached, went silent, or answered something unreadable."""

    def __init__(self, outcome: Outcome, message: str) -> None:
        super().__init__(message)
        self.outcome = outcome
