"""The user docs: a short README front, every setting documented, no internal references,
links that lead somewhere, the licence said in one voice."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import config

ROOT = Path(__file__).resolve().parent.parent
USER_DOCS = [ROOT / "README.md", ROOT / ".env.example", *sorted((ROOT / "docs").glob("*.md"))]
# What means something to the people who built KeyRelay and nothing to its users: issue
# numbers, requirement ids (F30), plan targets (P2), the original prototypes ("seed 002",
# "the seed's"), the spec and the style guide.
INTERNAL = re.compile(
    r"\bissues? #?\d+|\bF\d{1,3}\b|\bP\d\b|\bseeds? \d|\bseed's|\bSPEC\b|SPEC\.md|STYLE\.md"
    r"|ISSUE\d|\bfirst part\b",
    re.IGNORECASE,
)
SETTING_ROW = re.compile(r"^\| `KEYRELAY_(\w+)` \| ([^|]+) \|", re.MULTILINE)


def test_the_readme_front_is_at_most_150_lines():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 150, len(lines)


def test_user_docs_hold_no_internal_references():
    found = []
    for path in USER_DOCS:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            # Case matters for the short ids only: "f1" in a hash or "p9" is not one.
            for match in INTERNAL.finditer(line):
                text = match.group(0)
                if re.fullmatch(r"[fp]\d+", text):
                    continue
                found.append(f"{path.relative_to(ROOT)}:{number}: {text!r} in {line.strip()!r}")
    assert found == []


def test_the_internal_reference_check_catches_what_it_is_for():
    for text in ("(issue 11)", "(F30, F32)", "the proxy's P2 target", "seeds 000/001", "SPEC.md"):
        assert INTERNAL.search(text), text
    for text in ("`seed` carried", "a dashboard session", "p99", "sha f1a2"):
        hit = INTERNAL.search(text)
        assert hit is None or re.fullmatch(r"[fp]\d+", hit.group(0)), text


def test_every_setting_is_in_docs_settings_with_its_default():
    """docs/settings.md has a row for every KEYRELAY_* variable config.py reads."""
    rows = dict(SETTING_ROW.findall((ROOT / "docs" / "settings.md").read_text()))
    missing = [s.name for s in config.SETTINGS if s.name not in rows]
    assert missing == []
    assert set(rows) <= {s.name for s in config.SETTINGS}


def _shown(setting: config.Setting) -> str:
    """A default as the settings tables write it."""
    if setting.default is None:
        return "—"
    if isinstance(setting.default, bool):
        return f"`{str(setting.default).lower()}`"
    return f"`{setting.default}`"


def test_the_readme_settings_and_env_example_are_real_settings_with_their_defaults():
    by_name = {s.name: s for s in config.SETTINGS}
    readme_rows = SETTING_ROW.findall((ROOT / "README.md").read_text())
    assert len(readme_rows) == 10
    for name, default in readme_rows:
        assert default.strip() == _shown(by_name[name]), name
    example = (ROOT / ".env.example").read_text()
    named = re.findall(r"^# (KEYRELAY_\w+)=", example, re.MULTILINE)
    assert sorted(named) == sorted(f"KEYRELAY_{name}" for name, _ in readme_rows)
    # Each setting has its line of why just above it.
    for name in named:
        before = example.split(f"# {name}=")[0].rstrip("\n").splitlines()[-1]
        assert before.startswith("# ") and len(before) > 20, name


def test_every_relative_link_in_the_docs_leads_to_a_file():
    broken = []
    for path in USER_DOCS:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text()):
            if "://" in target:
                continue
            if not (path.parent / target).exists():
                broken.append(f"{path.relative_to(ROOT)} → {target}")
    assert broken == []


def test_the_licence_is_mit_everywhere_it_is_said():
    licence = (ROOT / "LICENSE").read_text()
    assert licence.startswith("MIT License") and "KeyRelay contributors" in licence
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT"
    assert project["scripts"]["keyrelay"] == "blueprints.cli:main"
    assert "MIT licence ([LICENSE](LICENSE))" in (ROOT / "README.md").read_text()
