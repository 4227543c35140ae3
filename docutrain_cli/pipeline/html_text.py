"""Readable text out of web pages (.html, .htm), with lxml.

lxml is already here (python-docx and python-pptx are built on it), parses
the broken HTML of real pages like a browser does (libxml2's HTML parser),
and reads a `<meta charset>` itself (UTF-8 is tried first: without one,
libxml2 would assume Latin-1). Readability libraries (trafilatura,
readability-lxml) guess an "article" with scoring heuristics and bring more
dependencies; an uploaded page is usually the document itself, so we keep
all of it except what is never content: scripts, styles, forms, navigation,
site headers and footers, hidden elements. When the page marks its main
content (`<main>`, role=main), only that is read.

Headings, list items and table rows become Markdown blocks
(pipeline/structured.py); a page is a section under a top-level heading.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from docutrain_cli.errors import PermanentError, one_line
from docutrain_cli.pipeline.structured import HEADING, ITEM, PARAGRAPH, Block, ParsedPages, clean, row, sections

# Never content.
DROP_TAGS = (
    "script", "style", "noscript", "template", "nav", "aside", "form", "button",
    "select", "textarea", "input", "svg", "canvas", "iframe", "object", "embed", "head",
)
DROP_ROLES = {"navigation", "banner", "contentinfo", "complementary", "search", "menu", "menubar"}
HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
# Elements that end a run of text: what is inside them is a paragraph.
BLOCK_TAGS = {
    "p", "div", "section", "article", "main", "blockquote", "pre", "address", "figure",
    "figcaption", "dl", "dt", "dd", "ul", "ol", "li", "table", "tr", "header", "footer",
    "details", "summary", "center", "body", "br", "hr",
} | set(HEADINGS)


class HtmlReader(ParsedPages):
    def __init__(self, path: Path):
        import lxml.etree
        import lxml.html

        try:
            data = path.read_bytes()
        except OSError as exc:
            raise PermanentError(f"cannot read the file: {exc.strerror or exc}") from None
        if b"\0" in data[:4096] and not data.startswith((b"\xff\xfe", b"\xfe\xff")):
            raise PermanentError("not HTML: cannot open (binary data)")
        try:
            root = _parse(data)
        except (lxml.etree.ParserError, ValueError) as exc:
            raise PermanentError(f"not HTML: cannot open ({one_line(exc)})") from None
        self.title = clean(root.findtext(".//title") or "")
        _strip(root)
        main = root.find(".//main")
        if main is None:
            main = next(iter(root.xpath('.//*[@role="main"]')), None)
        self.pages_text = sections(list(_blocks(main if main is not None else root)))


def _parse(data: bytes):
    """UTF-8 when the bytes are valid UTF-8 (libxml2 reads a page without a
    <meta charset> as Latin-1, which garbles every accent); otherwise the
    bytes as they are, for the page's own charset declaration."""
    import lxml.html

    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return lxml.html.document_fromstring(data)
    try:
        return lxml.html.document_fromstring(text)
    except ValueError:  # "Unicode strings with encoding declaration are not supported"
        return lxml.html.document_fromstring(data)


def _strip(root) -> None:
    doomed = [el for el in root.iter() if _never_content(el)]
    for el in doomed:
        if el.getparent() is not None:
            el.drop_tree()  # keeps the tail text that follows the element


def _never_content(el) -> bool:
    tag = el.tag if isinstance(el.tag, str) else ""  # comments and PIs have no str tag
    if not tag:
        return True
    if tag in DROP_TAGS:
        return True
    if el.get("hidden") is not None or el.get("aria-hidden") == "true":
        return True
    if (el.get("role") or "").lower() in DROP_ROLES:
        return True
    if tag in ("header", "footer"):
        # The site's header and footer, not an article's own.
        return not any(a.tag in ("article", "main", "section") for a in el.iterancestors())
    style = (el.get("style") or "").replace(" ", "").lower()
    return "display:none" in style


def _blocks(root) -> Iterator[Block]:
    """Walk the tree; text runs between block edges become paragraphs."""
    run: list[str] = []
    in_item = [False]  # the next run of text is a list item's own

    def flush() -> Iterator[Block]:
        text = clean("".join(run))
        run.clear()
        if text:
            yield Block(ITEM if in_item[0] else PARAGRAPH, text)
            in_item[0] = False

    def walk(el) -> Iterator[Block]:
        tag = el.tag if isinstance(el.tag, str) else ""
        if tag in HEADINGS:
            yield from flush()
            yield Block(HEADING, clean(el.text_content()), HEADINGS[tag])
        elif tag == "table":
            yield from flush()
            for table_row in el.iter("tr"):
                cells = [c.text_content() for c in table_row if c.tag in ("td", "th")]
                if any(c.strip() for c in cells):
                    yield row(cells)
        elif tag == "pre":
            yield from flush()
            text = el.text_content().strip("\n")
            if text.strip():
                yield Block(PARAGRAPH, text)
        else:
            block = tag in BLOCK_TAGS
            if block:
                yield from flush()
            in_item[0] = in_item[0] or tag == "li"
            if el.text:
                run.append(el.text)
            for child in el:
                yield from walk(child)
            if block:
                yield from flush()
            if tag == "li":
                in_item[0] = False
        if el.tail:
            run.append(el.tail)

    yield from walk(root)
    yield from flush()

