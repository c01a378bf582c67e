"""A report page as a browser reads it: its embedded images and anything it would fetch from elsewhere.

Tests check the page by parsing it, never by searching its text: the base64 of an embedded PNG is part of
the text, and its bytes (which depend on the CPU the image was drawn on) can spell any word ("http", "//cdn").
"""

from __future__ import annotations

import base64
import io
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser

from PIL import Image

# Attributes whose value a browser loads or navigates to.
_URL_ATTRIBUTES = {"src", "href", "srcset", "poster", "action", "formaction", "data", "background", "xlink:href"}
# Elements that run or pull in other content: the report needs none of them.
_ACTIVE_ELEMENTS = {"script", "link", "iframe", "object", "embed", "frame", "base", "applet"}
# CSS that loads a resource: url(...) and @import.
_CSS_FETCH = re.compile(r"url\s*\(|@import", re.IGNORECASE)
PNG_DATA_URI = "data:image/png;base64,"


@dataclass
class Page:
    """What a parsed page embeds and references."""

    images: list[str] = field(default_factory=list)  # every <img src>, as written
    external: list[str] = field(default_factory=list)  # everything a browser would fetch or run: should be empty
    text: str = ""  # the visible text, text nodes joined by a space
    cells: list[str] = field(default_factory=list)  # the text of every table cell (th, td), in page order

    def png_images(self) -> list[Image.Image]:
        """The embedded PNGs, decoded (raises if one is not a PNG data URI or does not decode)."""
        decoded = []
        for src in self.images:
            assert src.startswith(PNG_DATA_URI), f"not an embedded PNG: {src[:60]}"
            image = Image.open(io.BytesIO(base64.b64decode(src[len(PNG_DATA_URI) :], validate=True)))
            image.load()
            decoded.append(image)
        return decoded


class _Reader(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.page = Page()
        self._style = False
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _ACTIVE_ELEMENTS:
            self.page.external.append(f"<{tag}>")
        for name, value in attrs:
            value = value or ""
            if tag == "img" and name == "src":
                self.page.images.append(value)
            if name in _URL_ATTRIBUTES and not value.startswith(("data:", "#")):
                self.page.external.append(f'{tag} {name}="{value[:80]}"')
            if name == "style" and _CSS_FETCH.search(value):
                self.page.external.append(f'{tag} style="{value[:80]}"')
            if name.startswith("on"):
                self.page.external.append(f"{tag} {name} (script)")
        self._style = tag == "style"
        if tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "style":
            self._style = False
        if tag in ("td", "th") and self._cell is not None:
            self.page.cells.append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._style:
            if _CSS_FETCH.search(data):
                self.page.external.append(f"<style>{data[:80]}")
            return
        if self._cell is not None:
            self._cell.append(data)
        if data.strip():
            self.page.text = f"{self.page.text} {data.strip()}".lstrip()


def parse_page(html_text: str) -> Page:
    reader = _Reader()
    reader.feed(html_text)
    reader.close()
    return reader.page
