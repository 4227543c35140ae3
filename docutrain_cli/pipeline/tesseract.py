"""One scanned page read by Tesseract: the right way up, level, and rated.

Tesseract runs in the worker process through tesserocr (its wheels carry
libtesseract), one engine per process and language, loaded on the first
page: no process and no image file per page, and about 0.75x the CPU of the
`tesseract` command on the same page (docs/benchmarks.md, row 9). MuPDF's
built-in Tesseract, used before, needed about 2x and says nothing about
confidence.

A page is rendered in grey at the OCR resolution, first turned by the small
angle that levels its lines (Tesseract's layout analysis drops most of a page
skewed 3-4 degrees counter-clockwise). The same low-dpi renders say whether
the lines run top to bottom: such a page lies turned a quarter, and
Tesseract's orientation detection (osd.traineddata) says which way before it
is read. A page read poorly (see `Reading.readable`) is checked by OSD too and
read again turned upright; the better reading is kept. Without
osd.traineddata the turns are tried instead. Upright pages, the usual case,
pay only for the line estimate (about 10 % of a page's CPU at 200 dpi).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Iterable

# One OpenMP thread per worker process, so N workers use N cores; must be set
# before libtesseract loads (the tesserocr wheel has no OpenMP today, the
# system's Tesseract has).
os.environ.setdefault("OMP_THREAD_LIMIT", "1")

# A reading is unreadable when Tesseract is unsure of its words AND few of
# them are in its dictionary. Measured here: upright prose scores 95 / 0.92,
# a table of numbers 94 / 0.0, a page read sideways 21 / 0.09, scribbles 47 / 0.19.
MIN_CONFIDENCE = 60.0
MIN_DICTIONARY_SHARE = 0.5
MIN_WORDS_FOR_SHARE = 10  # below, a share says little: 3 of 4 words from scribbles were "a", "I"...
# OSD below this confidence is a guess (noise, a few words): not acted on.
MIN_ORIENTATION_CONFIDENCE = 2.0
# Skew search: +-MAX_SKEW degrees in steps of 2, then 1 and half a degree either side.
MAX_SKEW = 6
SKEW_DPI = 36
# A skew is applied only when level lines stand out this much more than at 0.
MIN_SKEW_GAIN = 1.05
_INK_LEVEL = bytes((255 - grey) // 64 for grey in range(256))  # white 0 .. black 3
# Lines run top to bottom when columns' contrast beats rows' by this much:
# measured 8-45x for sideways prose, 0.05-0.14x upright, 4.5x for a table of numbers
# (and should a table be taken for sideways, upright is still tried last).
SIDEWAYS_CONTRAST = 6.0


@dataclasses.dataclass(frozen=True)
class Reading:
    """What Tesseract read on one page, and how sure it was."""

    text: str
    words: int
    confidence: float  # mean word confidence, 0-100
    dictionary_share: float  # share of words found in Tesseract's dictionary
    turn: int = 0  # degrees the page was turned to read it
    skew: float = 0.0

    @property
    def readable(self) -> bool:
        """Blank pages are readable (there is nothing to read); text is when
        Tesseract is confident of its glyphs or finds real words."""
        if not self.words:
            return True
        if self.confidence >= MIN_CONFIDENCE:
            return True
        return self.words >= MIN_WORDS_FOR_SHARE and self.dictionary_share >= MIN_DICTIONARY_SHARE

    @property
    def score(self) -> float:
        return self.confidence * self.words


def read_page(page, language: str, dpi: int, tessdata: str) -> Reading:
    """Read a page as displayed (its /Rotate applied), turned upright if need be."""
    engine = engine_for(tessdata, language)
    lines = find_lines(page)
    best = None
    for turn in _turns_to_try(page, dpi, tessdata, lines):
        reading = dataclasses.replace(
            recognise(engine, render(page, dpi, turn + lines.skew), dpi), turn=turn, skew=lines.skew
        )
        if reading.readable and reading.words:
            return reading
        if best is None or reading.score > best.score:
            best = reading
        if not reading.words:  # blank: no turn reads more
            break
    return best


def _turns_to_try(page, dpi: int, tessdata: str, lines: "Lines") -> Iterable[int]:
    """Upright first, then what OSD finds; a page whose lines run top to
    bottom is turned a quarter first, the way OSD says. Lazily: OSD runs only
    for a page read poorly or lying sideways. Without osd.traineddata each
    remaining turn is tried."""
    osd = orientation_available(tessdata)
    if lines.sideways:
        first = detect_turn(page, dpi, tessdata) if osd else 0
        first = first if first in (90, 270) else 90
        yield first
        yield 360 - first
        yield 0  # tall columns of figures can look like sideways lines
        return
    yield 0
    if not osd:
        yield 180
        return
    turn = detect_turn(page, dpi, tessdata)
    if turn:
        yield turn


def orientation_available(tessdata: str | None) -> bool:
    return bool(tessdata) and os.path.isfile(os.path.join(tessdata, "osd.traineddata"))


def render(page, dpi: int, degrees: float = 0.0, *, grey: bool = True):
    import pymupdf

    matrix = pymupdf.Matrix(dpi / 72, dpi / 72).prerotate(degrees)
    colorspace = pymupdf.csGRAY if grey else pymupdf.csRGB
    return page.get_pixmap(matrix=matrix, colorspace=colorspace, alpha=False)


def recognise(engine, pixmap, dpi: int) -> Reading:
    from tesserocr import RIL, iterate_level

    engine.SetImageBytes(pixmap.samples, pixmap.width, pixmap.height, pixmap.n, pixmap.stride)
    engine.SetSourceResolution(dpi)
    if not engine.Recognize():
        raise RuntimeError("Tesseract could not recognise the page")
    confidences, in_dictionary = [], 0
    iterator = engine.GetIterator()
    if iterator is not None and not iterator.Empty(RIL.WORD):  # iterate_level yields even from an empty page
        for word in iterate_level(iterator, RIL.WORD):
            if (word.GetUTF8Text(RIL.WORD) or "").strip():
                confidences.append(word.Confidence(RIL.WORD))
                in_dictionary += bool(word.WordIsFromDictionary())
    text = engine.GetUTF8Text() if confidences else ""
    words = len(confidences)
    return Reading(
        text,
        words,
        sum(confidences) / words if words else 0.0,
        in_dictionary / words if words else 0.0,
    )


def detect_turn(page, dpi: int, tessdata: str) -> int:
    """Degrees (0, 90, 180, 270) to turn the page's rendering by to read it; 0 when unsure."""
    detector = _orientation_detector(tessdata)
    pixmap = render(page, dpi)
    detector.SetImageBytes(pixmap.samples, pixmap.width, pixmap.height, pixmap.n, pixmap.stride)
    detector.SetSourceResolution(dpi)
    found = detector.DetectOrientationScript()  # None when there is too little text
    if not found or found["orient_conf"] < MIN_ORIENTATION_CONFIDENCE:
        return 0
    # orient_deg is how far the page is turned; turning it back undoes that.
    return (360 - found["orient_deg"]) % 360


@dataclasses.dataclass(frozen=True)
class Lines:
    skew: float  # degrees that level the page's text lines (0.0 if none do better)
    sideways: bool  # the lines run top to bottom: the page lies turned a quarter


def find_lines(page) -> Lines:
    """Which way the page's text lines run, and the small angle that levels them.

    Projection profiles: rendered at a few dpi and turned by each candidate
    angle, level lines give rows alternating dark and light, so the sum of
    squared differences between neighbouring rows' ink peaks there (columns'
    ink when the lines run top to bottom)."""
    coarse = {a: _line_contrast(page, a) for a in range(-MAX_SKEW, MAX_SKEW + 1, 2)}
    by_rows = max(coarse, key=lambda a: coarse[a][0])
    by_columns = max(coarse, key=lambda a: coarse[a][1])
    sideways = coarse[by_columns][1] > SIDEWAYS_CONTRAST * coarse[by_rows][0]
    axis, angle = (1, by_columns) if sideways else (0, by_rows)
    tried = {a: c[axis] for a, c in coarse.items()}
    for step in (1, 0.5):  # halve the interval around the best angle so far
        tried.update({a: _line_contrast(page, a)[axis] for a in (angle - step, angle + step)})
        angle = max(tried, key=tried.get)
    if angle == 0 or tried[angle] < tried[0] * MIN_SKEW_GAIN:
        angle = 0
    return Lines(float(angle), sideways)


def _line_contrast(page, degrees: float) -> tuple[int, int]:
    """(rows, columns): how sharply ink changes from one pixel row (column) to the next."""
    pixmap = render(page, SKEW_DPI, degrees)
    width, height, stride = pixmap.width, pixmap.height, pixmap.stride
    ink = pixmap.samples.translate(_INK_LEVEL)  # grey in 4 levels: bytes.count sums them in C

    def amount(line: bytes) -> int:
        return line.count(1) + 2 * line.count(2) + 3 * line.count(3)

    rows = [amount(ink[r * stride : r * stride + width]) for r in range(height)]
    columns = [amount(ink[c : height * stride : stride]) for c in range(width)]
    return _contrast(rows), _contrast(columns)


def _contrast(ink: list[int]) -> int:
    return sum((a - b) ** 2 for a, b in zip(ink, ink[1:]))


@functools.lru_cache(maxsize=4)
def engine_for(tessdata: str, language: str):
    """This process's Tesseract for `language`, loaded once (about 0.1 s)."""
    import tesserocr

    try:
        return tesserocr.PyTessBaseAPI(path=tessdata, lang=language)
    except RuntimeError as exc:  # "Failed to init API, possibly an invalid tessdata path"
        raise RuntimeError(f"Tesseract cannot load {language} from {tessdata}: {exc}") from None


@functools.lru_cache(maxsize=2)
def _orientation_detector(tessdata: str):
    import tesserocr

    return tesserocr.PyTessBaseAPI(path=tessdata, lang="osd", psm=tesserocr.PSM.OSD_ONLY)
