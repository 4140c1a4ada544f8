"""The live dashboard: every primitive of a namespace, pushed to the browser, with actions.

::

    from redkit.dashboard import Role, dashboard_app
    app.mount("/redkit", dashboard_app(rk, auth=lambda request: Role.ADMIN if ... else None))

Needs the ``web`` extra (Starlette, Jinja2). See :mod:`redkit.dashboard.app`.
"""

from redkit.dashboard.app import dashboard_app
from redkit.dashboard.security import DEFAULT_SENSITIVE_FIELDS, MASK, Role, Viewer
from redkit.dashboard.views import View, ViewContext

__all__ = [
    "DEFAULT_SENSITIVE_FIELDS",
    "MASK",
    "Role",
    "View",
    "ViewContext",
    "Viewer",
    "dashboard_app",
]
