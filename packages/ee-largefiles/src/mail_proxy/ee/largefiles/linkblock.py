"""The block of download links that replaces offloaded attachments in a message's body.

It goes at the end of the text part and before ``</body>`` of the HTML part (or at its end);
a message with only one of the two gets it in that one. In HTML every value (file name, URL,
the tenant's ``link_text``) is escaped.
"""

from __future__ import annotations

import html
import re
import time
from dataclasses import dataclass
from email.message import EmailMessage, Message

from .config import shown_mb

DEFAULT_INTRO = "Large attachments, available for download:"
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)


@dataclass(frozen=True)
class Link:
    """One offloaded attachment as the recipient sees it."""

    filename: str
    size: int
    url: str
    expires_at: float


def _date(ts: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ts))


def text_block(links: list[Link], intro: str | None) -> str:
    lines = ["", "", "----", intro or DEFAULT_INTRO]
    for link in links:
        lines.append(
            f"- {link.filename} ({shown_mb(link.size)}, until {_date(link.expires_at)}): {link.url}"
        )
    return "\n".join(lines) + "\n"


def html_block(links: list[Link], intro: str | None) -> str:
    items = "".join(
        f'<li><a href="{html.escape(link.url, quote=True)}">{html.escape(link.filename)}</a>'
        f" ({html.escape(shown_mb(link.size))}, until {_date(link.expires_at)})</li>"
        for link in links
    )
    title = html.escape(intro or DEFAULT_INTRO)
    return (
        '<div class="gmp-large-files" style="margin-top:1em;border-top:1px solid #ccc">'
        f"<p>{title}</p><ul>{items}</ul></div>"
    )


def _body_parts(msg: Message) -> list[EmailMessage]:
    """The message's text/plain and text/html body parts (never an attachment)."""
    found = []
    for part in msg.walk():
        if part.is_multipart() or part.get_content_disposition() == "attachment":
            continue
        if part.get_content_type() in ("text/plain", "text/html"):
            found.append(part)
    return found  # type: ignore[return-value]


def add_links(msg: EmailMessage, links: list[Link], intro: str | None = None) -> None:
    """Add the link block to every body part of ``msg`` (in place)."""
    if not links:
        return
    for part in _body_parts(msg):
        subtype = part.get_content_subtype()
        content = part.get_content()
        if subtype == "html":
            block = html_block(links, intro)
            ends = list(_BODY_END.finditer(content))
            if ends:
                at = ends[-1].start()
                content = content[:at] + block + content[at:]
            else:
                content += block
        else:
            content = content.rstrip("\n") + text_block(links, intro)
        part.set_content(content, subtype=subtype, charset="utf-8")
