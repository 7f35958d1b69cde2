"""The front ends parse, call a command and render: no audit entry or commit is written in
a view again (sign-in and the payment webhook included)."""

from __future__ import annotations

import re
from pathlib import Path

BLUEPRINTS = Path(__file__).resolve().parents[2] / "blueprints"
CALLS = re.compile(r"\baudit\(|\bcommit_keys\(|\.commit\(")


def test_no_view_audits_or_commits():
    found = {}
    for path in sorted(BLUEPRINTS.glob("*.py")):
        count = len(CALLS.findall(path.read_text()))
        if count:
            found[path.name] = count
    assert found == {}
