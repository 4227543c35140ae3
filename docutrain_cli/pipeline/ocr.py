"""OCR of scanned pages: which pages, the limits, what a document's OCR came to.

Pages are read by Tesseract through tesserocr (pipeline/tesseract.py: turned
upright, levelled, rated). Its wheels carry libtesseract, so all OCR needs
from the system is Tesseract's language data: `<lang>.traineddata` files in a
"tessdata" folder (Debian: `apt-get install tesseract-ocr-eng
tesseract-ocr-osd` puts them in /usr/share/tesseract-ocr/5/tessdata; osd is
the orientation detection). "OCR is available" means that folder exists and
holds the languages asked for. We look for it ourselves (the `tessdata`
setting / TESSDATA_PREFIX, then the usual install paths) once per process.

A reading Tesseract rates unreadable (`Reading.readable`: low confidence and
few dictionary words) is not stored as the page's text: the page is counted
in `unreadable` and the job result's `unreadable_pages`.

OCR costs seconds a page, so in `auto` mode only pages without a usable text
layer (no text, or mostly U+FFFD from fonts without a Unicode map) whose
images cover most of the page are OCR'd; a mixed document keeps its real
text. `force` OCRs every page (for documents whose text layer is garbage).
Before the first OCR the rest of the document is scanned (cheap: text
extraction only) so the page count is known: for the progress line ("OCR
page 3/40") and to refuse, before spending minutes, a document over
`max_ocr_pages`. A page is never started when the job timeout would cut it
off: the job ends with a reason instead of being killed and retried.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import logging
import os
import time
from typing import Callable

from docutrain_cli.errors import PermanentError, one_line
from docutrain_cli.pipeline.tesseract import orientation_available, read_page

log = logging.getLogger(__name__)

INSTALL_HINT = "apt-get install tesseract-ocr tesseract-ocr-eng"
ORIENTATION_HINT = "apt-get install tesseract-ocr-osd"
# Where distributions and Homebrew put the language data, newest version last.
TESSDATA_PATTERNS = (
    "/usr/share/tesseract-ocr/*/tessdata",
    "/usr/share/tessdata",
    "/usr/local/share/tessdata",
    "/usr/local/share/tesseract-ocr/*/tessdata",
    "/opt/homebrew/share/tessdata",
)
# A page is "scanned" when images cover at least this share of it...
MIN_IMAGE_COVER = 0.5
# ...and its text layer is empty or at least this share U+FFFD.
MIN_REPLACEMENT_SHARE = 0.5
# Keep this much of the job timeout free after an OCR page, on top of the
# slowest page so far: the worker must still chunk, embed and store.
DEADLINE_MARGIN_SECONDS = 5.0


@dataclasses.dataclass(frozen=True)
class OcrSupport:
    """What this machine can OCR: the language folder and its languages."""

    tessdata: str | None
    languages: tuple[str, ...] = ()
    configured: str | None = None  # the folder the settings named, if any

    def missing(self, language: str) -> list[str]:
        return [lang for lang in language.split("+") if lang not in self.languages]

    def problem(self, language: str) -> str | None:
        """Why OCR in `language` cannot run here (with the fix), or None."""
        if self.tessdata is None and self.configured:
            return f"no Tesseract language data in {self.configured} (tessdata setting / TESSDATA_PREFIX)"
        if self.tessdata is None:
            return f"Tesseract is not installed ({INSTALL_HINT})"
        missing = self.missing(language)
        if missing:
            packages = " ".join(f"tesseract-ocr-{lang.lower().replace('_', '-')}" for lang in missing)
            return (
                f"Tesseract has no {'+'.join(missing)} language data in {self.tessdata} "
                f"(apt-get install {packages}, or set ocr_language)"
            )
        return None


@functools.lru_cache(maxsize=8)
def find_support(tessdata: str | None = None) -> OcrSupport:
    """The configured folder if given (TESSDATA_PREFIX reaches us as the
    `tessdata` setting), else the first usual place with language files."""
    candidates = [tessdata] if tessdata else [
        path for pattern in TESSDATA_PATTERNS for path in sorted(glob.glob(pattern), reverse=True)
    ]
    for folder in candidates:
        languages = _languages_in(folder)
        if languages:
            return OcrSupport(folder, languages, tessdata)
    return OcrSupport(None, (), tessdata)


def _languages_in(folder: str) -> tuple[str, ...]:
    try:
        names = os.listdir(folder)
    except OSError:
        return ()
    return tuple(sorted(n[: -len(".traineddata")] for n in names if n.endswith(".traineddata") and n != "osd.traineddata"))


def ocr_check(settings) -> tuple[bool, str, str | None]:
    """For `doctor`: (ok, what is there, how to fix it)."""
    support = find_support(settings.tessdata)
    if settings.ocr == "off":
        return True, "off (ocr = off): scanned pages are not read", None
    problem = support.problem(settings.ocr_language)
    if problem is None:
        return True, (
            f"{settings.ocr}, language {settings.ocr_language}, {settings.ocr_dpi} dpi; "
            f"installed languages: {', '.join(support.languages)} ({support.tessdata})"
        ), None
    if settings.ocr == "auto" and support.tessdata is None and not support.configured:
        # Not an error: documents with a text layer work; scanned ones end dead saying this.
        return True, f"not available, scanned pages cannot be read: {problem}", f"install Tesseract: {INSTALL_HINT}"
    return False, problem, None  # the problem names its fix


def orientation_check(settings) -> tuple[bool, str, str | None]:
    """For `doctor`: can sideways and upside-down scans be found cheaply?"""
    tessdata = find_support(settings.tessdata).tessdata
    if settings.ocr == "off" or tessdata is None:
        return True, "not needed: OCR is off or not available", None
    if orientation_available(tessdata):
        return True, f"available (osd.traineddata in {tessdata}): turned scans are read upright", None
    return True, (
        f"no osd.traineddata in {tessdata}: a poorly read page is read again turned each way (slower)"
    ), f"install it: {ORIENTATION_HINT}"


def needs_ocr(page, text: str) -> bool:
    """No usable text layer, and images cover most of the page."""
    if "\ufffd" not in text:  # most pages: settled without copying the text
        if text and not text.isspace():
            return False
    else:
        visible = "".join(text.split())
        if visible.count("\ufffd") < MIN_REPLACEMENT_SHARE * len(visible):
            return False
    return image_cover(page) >= MIN_IMAGE_COVER


def image_cover(page) -> float:
    """Share of the page's area under images (overlaps counted twice, capped at 1)."""
    # Image boxes are in the unrotated page's coordinates (a sideways scan
    # shown upright by /Rotate 90 has them landscape): compare like with like.
    unrotated = page.rect * page.derotation_matrix
    area = abs(unrotated)
    if not area:
        return 0.0
    covered = 0.0
    for info in page.get_image_info():
        box = unrotated & info["bbox"]  # clipped to the page
        if not box.is_empty:
            covered += abs(box)
    return min(covered / area, 1.0)


@dataclasses.dataclass(frozen=True)
class OcrOptions:
    """The OCR settings a worker passes to an extraction (picklable, no clients)."""

    mode: str = "auto"  # auto | off | force
    language: str = "eng"
    dpi: int = 300
    max_pages: int = 200
    tessdata: str | None = None

    @classmethod
    def from_settings(cls, settings) -> "OcrOptions":
        return cls(settings.ocr, settings.ocr_language, settings.ocr_dpi, settings.max_ocr_pages, settings.tessdata)


class PageOcr:
    """OCR for one document: which pages, how many, within the cap and the
    deadline; counts pages and seconds for the job's result."""

    def __init__(
        self,
        options: OcrOptions,
        *,
        deadline: float | None = None,
        progress: Callable[[str], None] | None = None,
    ):
        self.options = options
        self.deadline = deadline  # time.monotonic() value
        self.progress = progress or (lambda message: None)
        self.support = find_support(options.tessdata)
        self.problem = None if options.mode == "off" else self.support.problem(options.language)
        self.pages_done = 0
        self.seconds = 0.0
        self.slowest = 0.0
        self.skipped: list[int] = []  # scanned pages left unread (OCR off or unavailable)
        self.unreadable: list[int] = []  # page numbers whose OCR output Tesseract rated unreadable
        self.failures: list[str] = []  # why OCR failed, per failed page
        self._plan: set[int] | None = None  # page indexes to OCR, once known
        self._total = 0

    @property
    def enabled(self) -> bool:
        return self.options.mode != "off" and self.problem is None

    def wanted(self, doc, index: int, page, text: str) -> bool:
        """Should page `index` (already loaded, with its text layer) be OCR'd?"""
        if self._plan is not None:
            return index in self._plan
        if self.options.mode == "force":
            if self.problem:  # said at the first page, so a Word file is not refused for it
                raise PermanentError(f"OCR is forced (ocr = force) but {self.problem}")
            wanted = True
        else:
            wanted = needs_ocr(page, text)
        if wanted and not self.enabled:
            self.skipped.append(index + 1)
            return False
        if wanted:
            self._make_plan(doc, index)
        return wanted

    def _make_plan(self, doc, first: int) -> None:
        if self.options.mode == "force":
            plan = set(range(first, doc.page_count))
        else:
            plan = {first}
            for index in range(first + 1, doc.page_count):
                try:
                    page = doc.load_page(index)
                    if needs_ocr(page, page.get_text("text")):
                        plan.add(index)
                except (RuntimeError, ValueError):
                    continue  # the main pass reports the broken page
        if len(plan) > self.options.max_pages:
            which = "pages (ocr = force)" if self.options.mode == "force" else "scanned pages"
            raise PermanentError(
                f"too many pages to OCR: {len(plan)} {which}, limit {self.options.max_pages} (max_ocr_pages)"
            )
        self._plan, self._total = plan, len(plan)

    def read(self, page) -> str:
        """The page's text by OCR; "" when Tesseract rates what it read unreadable."""
        self._check_deadline()
        self.progress(f"OCR page {self.pages_done + 1}/{self._total}")
        started = time.monotonic()
        try:
            reading = read_page(page, self.options.language, self.options.dpi, self.support.tessdata)
            text = reading.text
        except RuntimeError as exc:  # MuPDF or Tesseract gave up on this page: keep the rest
            log.warning("page %d: OCR failed: %s", page.number + 1, exc)
            self.failures.append(one_line(exc))
            text = ""
        else:
            if not reading.readable:
                log.warning(
                    "page %d: OCR output unreadable (mean word confidence %.0f, %.0f%% dictionary words): not stored",
                    page.number + 1, reading.confidence, 100 * reading.dictionary_share,
                )
                self.unreadable.append(page.number + 1)
                text = ""
        took = time.monotonic() - started
        self.pages_done += 1
        self.seconds += took
        self.slowest = max(self.slowest, took)
        return text

    def _check_deadline(self) -> None:
        if self.deadline is None:
            return
        left = self.deadline - time.monotonic()
        if left < self.slowest + DEADLINE_MARGIN_SECONDS:
            raise PermanentError(
                f"OCR does not fit in the job timeout: {self.pages_done} of {self._total} scanned pages "
                f"read in {self.seconds:.0f} s; raise job_timeout, or lower ocr_dpi or max_ocr_pages"
            )

    def no_text_reason(self) -> str | None:
        """Why a document came out without text, when OCR is the reason."""
        if self.failures and len(self.failures) == self.pages_done:
            return f"no extractable text: OCR failed on every scanned page ({self.failures[0]})"
        if self.unreadable:
            which = "the scanned page" if self.pages_done == 1 else f"{len(self.unreadable)} of {self.pages_done} scanned pages"
            rest = "" if len(self.unreadable) == self.pages_done else ", the rest blank"
            return f"no extractable text: OCR of {which} was unreadable (low confidence, few dictionary words){rest}"
        if self.pages_done:
            pages = "1 scanned page" if self.pages_done == 1 else f"{self.pages_done} scanned pages"
            return f"no extractable text, even by OCR of {pages}"
        if not self.skipped:
            return None
        if self.options.mode == "off":
            return "no extractable text: the pages are scanned images and OCR is off (set ocr = auto)"
        return f"no extractable text: the pages are scanned images and OCR is not available: {self.problem}"
