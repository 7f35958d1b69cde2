"""The member's own pages: their dashboard at /analytics (keys, balance, budget, usage).

Only members come here; an admin or viewer is sent to the admin dashboard."""

from __future__ import annotations

from flask import Blueprint, redirect, render_template, url_for
from flask_login import current_user

from blueprints.web import guard_member, no_cache, register_csrf_error

bp = Blueprint("portal", __name__)
bp.before_request(guard_member)
bp.after_request(no_cache)
register_csrf_error(bp)


@bp.get("/analytics")
def analytics():
    """The member's dashboard."""
    if not current_user.is_member:
        return redirect(url_for("dashboard.overview"))
    return render_template("portal.html", member=current_user)
