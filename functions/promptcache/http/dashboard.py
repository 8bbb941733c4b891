"""``GET /dashboard``: one static page (HTML, its script and its stylesheet, files of the layer's
``static`` folder) that reads ``GET /stats`` in the browser. No build step, nothing fetched from
elsewhere: a strict Content-Security-Policy allows only this origin's script, style and API, and
the page holds no secret (the key is pasted in and kept in the tab's sessionStorage)."""

from __future__ import annotations

import functools
from importlib import resources

#: Each asset's route, file and content type.
ASSETS = {
    "/dashboard": ("dashboard.html", "text/html; charset=utf-8"),
    "/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
}

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@functools.cache
def asset(path: str) -> tuple[str, str]:
    """The text and content type of the asset at route ``path`` (a KeyError for no asset)."""
    name, content_type = ASSETS[path]
    text = resources.files(__package__).joinpath("static", name).read_text(encoding="utf-8")
    return text, content_type
