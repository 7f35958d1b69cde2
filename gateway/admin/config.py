"""Configuration file commands: apply a models.yaml or limits.yaml, or check one."""

from __future__ import annotations

from gateway.admin import configfiles
from gateway.admin.context import CALLERS, KEYS, Admin


def import_file(admin: Admin, kind: str, text: str, replace: bool, dry_run: bool = False):
    """Apply the file (or with dry_run only check it); its report. A bad entry changes
    nothing: configfiles.ConfigFileError names it."""
    if kind not in configfiles.KINDS:
        raise configfiles.ConfigFileError("kind", "pick models.yaml or limits.yaml")
    try:
        report = configfiles.import_text(admin.session, kind, text, admin.now(), replace)
    except configfiles.ConfigFileError:
        admin.session.rollback()
        raise
    if dry_run:
        admin.session.rollback()
        return report
    admin.audit(f"config.import.{kind}", None, summary=report.summary())
    admin.commit(KEYS, CALLERS)
    return report
