"""The front ends parse, call a command and render: no audit entry or commit is written in
a view again. Sign-in (blueprints/auth.py: login, logout) is no admin action and is left
out; the audit helper it uses and the payment webhook are counted, so a new one fails."""

from __future__ import annotations

import re
from pathlib import Path

BLUEPRINTS = Path(__file__).resolve().parents[2] / "blueprints"
CALLS = re.compile(r"\baudit\(|\bcommit_keys\(|\.commit\(")
SIGN_IN = "auth.py"
# The helper sign-in audits with (its definition and its call); the Paystack webhook.
ALLOWED = {"web.py": 2, "webhooks.py": 1}


def test_no_view_audits_or_commits():
    found = {}
    for path in sorted(BLUEPRINTS.glob("*.py")):
        count = len(CALLS.findall(path.read_text()))
        if count and path.name != SIGN_IN:
            found[path.name] = count
    assert found == ALLOWED
