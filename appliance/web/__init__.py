"""The web child: JSON API (and, later, the status page and metrics) on hypercorn's trio worker."""

from appliance.web.app import create_app
from appliance.web.routes import RouteRegistry
from appliance.web.server import serve_web

__all__ = ["RouteRegistry", "create_app", "serve_web"]
