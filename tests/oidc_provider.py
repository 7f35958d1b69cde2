"""A real OpenID Connect provider for the SSO tests: npm `oidc-provider` (installed when
missing, tests/npm_tools.py) run by tests/oidc/provider.mjs on a free loopback port, with one
client (authorization code + PKCE S256). `sign_in` goes through its login form with
`requests`, as a browser would, where any login is taken as the email."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from html import unescape
from pathlib import Path
from urllib.parse import urljoin

import requests

from tests import npm_tools

SCRIPT = Path(__file__).resolve().parent / "oidc" / "provider.mjs"
CLIENT_ID = "keyrelay-test"
CLIENT_SECRET = "keyrelay-test-client-secret-0123456789"
CALLBACK_PATH = "/login/oidc/callback"
_FORM = re.compile(r'<form[^>]*action="([^"]+)"', re.I)
_HIDDEN = re.compile(r'<input[^>]*type="hidden"[^>]*name="([^"]+)"[^>]*value="([^"]*)"', re.I)


@dataclass(frozen=True)
class Client:
    """What KeyRelay is configured with: the issuer and its client's credentials."""

    issuer: str
    client_id: str
    client_secret: str


class OidcProvider:
    """`node provider.mjs` as a child process; closing its stdin (or `close`) ends it."""

    def __init__(self, folder: Path, redirect_uris: list[str]) -> None:
        node = shutil.which("node")
        if node is None:
            raise RuntimeError("node is needed to run oidc-provider: install Node.js")
        module = npm_tools.oidc_provider().as_uri()
        config = folder / "oidc-client.json"
        body = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
        config.write_text(json.dumps({**body, "redirect_uris": redirect_uris}))
        self.log = (folder / "oidc-provider.log").open("w")
        self.process = subprocess.Popen(
            [node, str(SCRIPT), module, str(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )
        line = self.process.stdout.readline()
        if not line:
            self.close()
            log = (folder / "oidc-provider.log").read_text()[-2000:]
            raise RuntimeError(f"oidc-provider did not start:\n{log}")
        self.issuer = json.loads(line)["issuer"]
        self.client = Client(self.issuer, CLIENT_ID, CLIENT_SECRET)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process.stdout.close()
        self.log.close()


def sign_in(session: requests.Session, start_url: str, email: str) -> requests.Response:
    """Open `start_url` (KeyRelay's `/login/oidc`), fill the provider's login form with the
    email, and follow the redirects back; the last answer (KeyRelay's) is returned."""
    page = session.get(start_url, timeout=10)
    if _FORM.search(page.text) is None:
        return page  # KeyRelay answered without sending us to the provider
    return _submit_login(session, page, email, follow=True)


def stop_before_callback(session: requests.Session, start_url: str, email: str) -> str:
    """Sign in at the provider but do not follow its last redirect: the callback URL it
    sends the browser to (for tests that change or replay it)."""
    answer = _submit_login(session, session.get(start_url, timeout=10), email, follow=False)
    while CALLBACK_PATH not in answer.headers.get("Location", ""):
        location = urljoin(answer.url, answer.headers["Location"])
        answer = session.get(location, timeout=10, allow_redirects=False)
    return answer.headers["Location"]


def _submit_login(
    session: requests.Session, page: requests.Response, email: str, follow: bool
) -> requests.Response:
    """Post the provider's login form (any password: its development form takes any)."""
    fields = dict(_HIDDEN.findall(page.text))
    fields.update({"login": email, "password": "any"})
    action = urljoin(page.url, unescape(_FORM.search(page.text).group(1)))
    return session.post(action, data=fields, timeout=10, allow_redirects=follow)
