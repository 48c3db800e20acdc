"""Connection URLs as they may be shown: the one place that hides their passwords.

The history database's URL (``store.py``) and Redis's (``redis.py``) appear in logs, status and errors; both go
through :func:`masked`, so a second, differing copy of the rule cannot leak a password.
"""

from __future__ import annotations

from sqlalchemy.engine import URL, make_url


def masked(url: str | URL) -> str:
    """The URL as it may appear in logs, status and errors: any password replaced by ***."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable URL>"
