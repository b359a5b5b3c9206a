"""The demo notebook's view of the web page: its link and a QR code to scan, as an image.

Thin, like the rest of the notebook helpers: the link comes from visual_tourism/web.py. In
local mode the page is served by `visual-tourism local serve` on this machine; the link is
the one it recorded, if it runs.
"""

from __future__ import annotations

import base64
import html
import io

from .. import web, where
from ..aws import Aws
from ..config import Config


def qr_data_uri(text: str, scale: int = 6) -> str:
    """``text`` as a QR code, a PNG data URI (segno: pure Python, no network)."""
    import segno

    out = io.BytesIO()
    segno.make(text, error="m").save(out, kind="png", scale=scale, border=2)
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


def web_link(cfg: Config, aws: Aws, local: bool) -> str | None:
    """The page's link with the access code, or None when no page is being served."""
    if cfg.web_api != "on":
        return None
    if not local:
        return web.link(aws, cfg)
    served = web.served_url(cfg)  # recorded by `local serve --web`, and answering now
    code = web.get_code(aws, cfg) if served else None
    return f"{served}#code={code}" if served and code else None


def web_link_html(link: str) -> str:
    """The QR code with the link under it, big enough to scan from a projector."""
    safe = html.escape(link)
    return (
        '<div style="display:flex;gap:24px;align-items:center;flex-wrap:wrap">'
        f'<img src="{qr_data_uri(link)}" alt="QR code of the web page" width="240" '
        'height="240" style="image-rendering:pixelated">'
        '<div style="max-width:32em"><p><b>Scan with a phone</b>, or open:</p>'
        f'<p><a href="{safe}" target="_blank" rel="noreferrer">{safe}</a></p>'
        "<p>The access code is the part after <code>#code=</code>; the page keeps it out of "
        "server logs. <code>visual-tourism web --rotate-code</code> replaces it.</p></div></div>"
    )


def show_web_link(cfg: Config, aws: Aws, local: bool | None = None) -> str | None:
    """Display the QR code and link (and return the link); explain when there is no page.
    ``local``: default, whether this runs in local mode (``where.is_local``)."""
    from IPython.display import HTML, display

    if local is None:
        local = where.is_local()
    link = web_link(cfg, aws, local)
    if link is None:
        reason = ("the setting web_api is off" if cfg.web_api != "on" else
                  f"in local mode the page is served by '{web.LOCAL_SERVE}' (which prints "
                  "its link); it is not running for this stack")
        print(f"No web page to show: {reason}.")
        return None
    display(HTML(web_link_html(link)))
    return link
