"""Measurement 9 of scripts/bench.py: OCR against the `tesseract` command (issues 17, 24).

Scanned pages are made here: each page's prose typeset at 10 pt, photographed
at 300 dpi in grey (a scanner's resolution) and inserted as the page's only
content. Side by side in every repetition, all workers busy (N processes,
one OCR thread each: OMP_THREAD_LIMIT=1):

- 9: `docutrain run --drain --workers N` (render, skew, OCR, chunk, embed,
  store) against the `tesseract` command on the same pages rendered to PNG at
  the same dpi outside the clock, N processes at a time;
- 9a, 9b: the engines alone on those PNGs: tesserocr (libtesseract in the
  process, what docutrain uses) and MuPDF's built-in Tesseract (what it used
  before), each in a pool of N processes, against the command;
- 9c: the orientation handling's cost on upright pages (CPU a page, one
  process) against a plain reading, and the strategies compared on upright
  and turned pages (JSON `orientation`);
- the dpi table: word recall and pages/s at 200, 300 and 400 dpi.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

OCR_DPI = 200  # docutrain's default ocr_dpi (config.py), chosen from the dpi table
SCAN_DPI = 300  # the scanner's
FONT_SIZE = 10
DPI_TABLE = (200, 300, 400)
# The dpi table's scans: (name, font size, scanner dpi). The tests' scans are 12 pt at 150 dpi.
SCAN_KINDS = (("10 pt, scanned at 300 dpi", 10, 300), ("8 pt, scanned at 200 dpi", 8, 200),
              ("6 pt, scanned at 150 dpi", 6, 150), ("8 pt, scanned at 100 dpi (a fax)", 8, 100),
              ("12 pt, scanned at 150 dpi (the tests')", 12, 150))
TURNS = (90, 180, 270)


def scanned_pdf(path: Path, texts: list[str], degrees: float = 0, *, fontsize: float = FONT_SIZE,
                scan_dpi: int = SCAN_DPI) -> Path:
    """Image-only pages of `texts`, turned by `degrees` as a scanner stores them."""
    import pymupdf

    if path.exists():
        return path
    doc = pymupdf.open()
    for text in texts:
        src = pymupdf.open()
        if src.new_page().insert_textbox(pymupdf.Rect(50, 50, 550, 800), text, fontsize=fontsize) < 0:
            raise ValueError("page text does not fit")
        sideways = round(degrees / 90) % 2 == 1
        canvas = pymupdf.open()
        page = canvas.new_page(width=842, height=595) if sideways else canvas.new_page()
        page.show_pdf_page(page.rect, src, 0, rotate=degrees)
        picture = page.get_pixmap(dpi=scan_dpi, colorspace=pymupdf.csGRAY)
        doc.new_page(width=page.rect.width, height=page.rect.height).insert_image(page.rect, pixmap=picture)
    tmp = path.with_suffix(".tmp")
    doc.save(tmp, deflate=True)
    doc.close()
    tmp.replace(path)
    return path


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def recall(expected: str, got: str) -> float:
    pool: dict[str, int] = {}
    for w in words(got):
        pool[w] = pool.get(w, 0) + 1
    found = 0
    for w in words(expected):
        if pool.get(w):
            pool[w] -= 1
            found += 1
    return found / len(words(expected))


# -- the candidates, one page each (run in pool processes) ----------------------------------------


def _tessdata() -> str:
    from docutrain_cli.pipeline.ocr import find_support

    return find_support(None).tessdata


def command_page(png: str) -> str:
    return subprocess.run(["tesseract", png, "-", "-l", "eng"], capture_output=True, check=True, text=True,
                          env={**os.environ, "OMP_THREAD_LIMIT": "1"}).stdout


def tesserocr_page(png: str) -> str:
    import pymupdf

    from docutrain_cli.pipeline import tesseract

    pixmap = pymupdf.Pixmap(png)
    return tesseract.recognise(tesseract.engine_for(_tessdata(), "eng"), pixmap, OCR_DPI).text


def mupdf_page(png: str) -> str:
    import pymupdf

    pixmap = pymupdf.Pixmap(pymupdf.csRGB, pymupdf.Pixmap(png))  # its OCR reads nothing from grey
    data = pixmap.pdfocr_tobytes(compress=False, language="eng", tessdata=_tessdata())
    with pymupdf.open("pdf", data) as doc:
        return doc[0].get_text("text")


CANDIDATES = {"tesserocr": tesserocr_page, "mupdf": mupdf_page, "command": command_page}


def _pool_start() -> None:
    os.environ["OMP_THREAD_LIMIT"] = "1"


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def pages_per_second(fn, pngs: list[str], workers: int) -> tuple[float, float, list[str]]:
    """N fresh processes, all busy; (pages/s, CPU seconds a page, texts). Loading
    the engine is inside the clock, as in a run (the command loads it every page)."""
    pool = multiprocessing.get_context("fork").Pool(workers, initializer=_pool_start)
    cpu = children_cpu()
    started = time.perf_counter()
    texts = pool.map(fn, pngs, chunksize=1)
    rate = len(pngs) / (time.perf_counter() - started)
    pool.close()
    pool.join()  # reaped, so their CPU time is counted
    return rate, (children_cpu() - cpu) / len(pngs), texts


# -- orientation strategies (one process, CPU seconds a page) -----------------------------------


def plain_reading(page, dpi: int, tessdata: str) -> str:
    from docutrain_cli.pipeline import tesseract

    return tesseract.recognise(tesseract.engine_for(tessdata, "eng"), tesseract.render(page, dpi), dpi).text


def osd_first(page, dpi: int, tessdata: str) -> str:
    """OSD before every reading, then one reading turned as it says."""
    from docutrain_cli.pipeline import tesseract

    turn = tesseract.detect_turn(page, dpi, tessdata)
    engine = tesseract.engine_for(tessdata, "eng")
    return tesseract.recognise(engine, tesseract.render(page, dpi, turn), dpi).text


def turns_when_poor(page, dpi: int, tessdata: str) -> str:
    """Read; when Tesseract rates it unreadable, read each other turn, keep the best."""
    from docutrain_cli.pipeline import tesseract

    engine = tesseract.engine_for(tessdata, "eng")
    best = tesseract.recognise(engine, tesseract.render(page, dpi), dpi)
    for turn in TURNS:
        if best.readable:
            break
        reading = tesseract.recognise(engine, tesseract.render(page, dpi, turn), dpi)
        best = reading if reading.score > best.score else best
    return best.text


def docutrain_reading(page, dpi: int, tessdata: str) -> str:
    """What docutrain does (pipeline/tesseract.py): line direction and skew, OSD only when needed."""
    from docutrain_cli.pipeline import tesseract

    return tesseract.read_page(page, "eng", dpi, tessdata).text


STRATEGIES = {"plain": plain_reading, "osd_first": osd_first, "turns_when_poor": turns_when_poor,
              "docutrain": docutrain_reading}


def cpu_per_page(fn, pdf: Path, dpi: int, tessdata: str) -> tuple[float, list[str]]:
    import pymupdf

    texts = []
    with pymupdf.open(pdf) as doc:
        started = time.process_time()
        for page in doc:
            texts.append(fn(page, dpi, tessdata))
        return (time.process_time() - started) / doc.page_count, texts


# -- the measurement -------------------------------------------------------------------------------


def bench_ocr(mode, root: Path, ncpu: int, reps: int, *, h) -> tuple[list, dict]:
    """`h` is scripts/bench.py (its helpers and Row), passed in to avoid a circular import."""
    import pymupdf

    if not shutil.which("tesseract"):
        h.log("OCR: skipped, the tesseract command is not installed (apt-get install tesseract-ocr tesseract-ocr-eng)")
        return [], {}
    tessdata = _tessdata()
    workers = max(2, ncpu)
    folder = root / "corpus" / "scanned"
    folder.mkdir(parents=True, exist_ok=True)
    texts = {i: [h.page_text(500 + i, n, sentences=15) for n in range(1, mode.ocr_pages + 1)] for i in range(workers)}
    files = [scanned_pdf(folder / f"scan{i:02d}.pdf", texts[i]) for i in range(workers)]
    expected = [t for i in range(workers) for t in texts[i]]
    pages = len(expected)
    images = root / "corpus" / "scanned-png"
    images.mkdir(exist_ok=True)
    pngs = []
    for file in files:  # the same page images for every candidate, rendered outside the clock
        with pymupdf.open(file) as doc:
            for page in doc:
                png = images / f"{file.stem}-{page.number + 1}.png"
                if not png.exists():
                    page.get_pixmap(dpi=OCR_DPI, colorspace=pymupdf.csGRAY).save(png)
                pngs.append(str(png))

    names = ("docutrain", "command", "tesserocr", "mupdf")
    s: dict[str, list] = {k: [] for k in (*names, "ratio", "tesserocr_ratio", "mupdf_ratio")}
    engines = names[1:]  # their CPU is counted (the run's workers are not the bench's children)
    s |= {f"recall_{name}": [] for name in engines} | {f"cpu_per_page_{name}": [] for name in engines}
    s["ocr_seconds_per_page_docutrain"] = []
    for rep in range(reps):
        def docutrain() -> None:
            d = h.fresh_dir(root, "ocr")
            queue, store = d / "queue.db", d / "store.db"
            h.enqueue_cli(folder, queue, store, d)
            env = h.base_env(queue, store, DOCUTRAIN_OCR_DPI=str(OCR_DPI))
            _, out = h.run(h.docutrain_cmd() + ["run", "--drain", "--json", "--workers", str(workers)], env, d)
            summary = __import__("json").loads(out)
            if summary["totals"].get("ocr_pages") != pages:
                raise h.BenchError(f"OCR: expected {pages} pages OCR'd, summary says {summary['totals']}")
            s["docutrain"].append(pages / summary["elapsed"])
            s["ocr_seconds_per_page_docutrain"].append(summary["ocr_seconds"] / pages)  # wall time in OCR, workers

        def engine(name: str):
            def measure() -> None:
                rate, cpu, got = pages_per_second(CANDIDATES[name], pngs, workers)
                s[name].append(rate)
                s[f"cpu_per_page_{name}"].append(cpu)
                s[f"recall_{name}"].append(h.med([recall(e, g) for e, g in zip(expected, got)]))
            return measure

        order = [docutrain, engine("command"), engine("tesserocr"), engine("mupdf")]
        for fn in order if rep % 2 == 0 else order[::-1]:
            fn()
        s["ratio"].append(s["docutrain"][-1] / s["command"][-1])
        s["tesserocr_ratio"].append(s["tesserocr"][-1] / s["command"][-1])
        s["mupdf_ratio"].append(s["mupdf"][-1] / s["command"][-1])
        h.log(f"OCR rep {rep + 1}: docutrain {s['docutrain'][-1]:.2f} pages/s, " + ", ".join(
            f"{n} {s[n][-1]:.2f} pages/s ({s['cpu_per_page_' + n][-1]:.2f} s CPU/page)" for n in engines))

    orientation = bench_orientation(folder, texts[0][:2], reps, tessdata, h)
    dpi_table = {
        kind: bench_dpi(scanned_pdf(folder / f"dpi-{size}pt-{scan}.pdf", texts[0], fontsize=size, scan_dpi=scan),
                        texts[0], tessdata, h, kind)
        for kind, size, scan in SCAN_KINDS
    }
    ratio, engine_ratio, mupdf_ratio = h.med(s["ratio"]), h.med(s["tesserocr_ratio"]), h.med(s["mupdf_ratio"])
    upright = orientation["upright_cost_ratio"]
    command = f"tesseract command, {workers} at a time"
    Row = h.Row
    rows = [
        Row("9", f"OCR: docutrain run, {workers} workers, {OCR_DPI} dpi", h.med(s["docutrain"]), "pages/s",
            h.med(s["command"]), command, ratio, ">= 0.9", ratio >= 0.9, {"pages": pages, "repetitions": reps,
             "cpu_per_page": {n: h.med(s[f"cpu_per_page_{n}"]) for n in engines},
             "docutrain_ocr_seconds_per_page": h.med(s["ocr_seconds_per_page_docutrain"])}),
        Row("9a", "OCR engine: tesserocr (docutrain's)", h.med(s["tesserocr"]), "pages/s", h.med(s["command"]),
            command, engine_ratio, ">= 0.9", engine_ratio >= 0.9, {"recall": h.med(s["recall_tesserocr"]),
                                                  "recall_command": h.med(s["recall_command"])}),
        Row("9b", "OCR engine: MuPDF's built-in Tesseract (before)", h.med(s["mupdf"]), "pages/s",
            h.med(s["command"]), command, mupdf_ratio, "- (compared)", True, {"recall": h.med(s["recall_mupdf"])}),
        Row("9c", "OCR orientation + skew, upright pages", orientation["docutrain"]["upright"], "s CPU/page",
            orientation["plain"]["upright"], "plain reading, same pages", upright, "<= 1.1", upright <= 1.1,
            orientation),
    ]
    return rows, s | {"orientation": orientation, "dpi": dpi_table}


def bench_orientation(folder: Path, texts: list[str], reps: int, tessdata: str, h) -> dict:
    """CPU seconds a page and recall of each strategy on upright and on turned pages."""
    upright = scanned_pdf(folder / "orient-0.pdf", texts)
    turned = [scanned_pdf(folder / f"orient-{t}.pdf", texts, t) for t in TURNS]
    cpu: dict[str, dict[str, list[float]]] = {name: {"upright": [], "turned": []} for name in STRATEGIES}
    got: dict[str, dict[str, list[float]]] = {name: {"upright": [], "turned": []} for name in STRATEGIES}
    for rep in range(reps):
        names = list(STRATEGIES) if rep % 2 == 0 else list(STRATEGIES)[::-1]
        for name in names:
            seconds, read = cpu_per_page(STRATEGIES[name], upright, OCR_DPI, tessdata)
            cpu[name]["upright"].append(seconds)
            got[name]["upright"] = [recall(e, g) for e, g in zip(texts, read)]
            if rep == 0:  # turned pages: once (the cost there is in whole readings)
                costs, recalls = [], []
                for pdf in turned:
                    seconds, read = cpu_per_page(STRATEGIES[name], pdf, OCR_DPI, tessdata)
                    costs.append(seconds)
                    recalls += [recall(e, g) for e, g in zip(texts, read)]
                cpu[name]["turned"] = costs
                got[name]["turned"] = recalls
    result = {
        name: {
            "upright": h.med(cpu[name]["upright"]),
            "turned": h.med(cpu[name]["turned"]),
            "recall_upright": min(got[name]["upright"]),
            "recall_turned": min(got[name]["turned"]),
        }
        for name in STRATEGIES
    }
    ratios = [d / p for d, p in zip(cpu["docutrain"]["upright"], cpu["plain"]["upright"])]
    result["upright_cost_ratio"] = h.med(ratios)
    for name, r in result.items():
        if isinstance(r, dict):
            h.log(f"orientation {name}: upright {r['upright']:.2f} s/page (recall {r['recall_upright']:.2f}), "
                  f"turned {r['turned']:.2f} s/page (recall {r['recall_turned']:.2f})")
    return result


def bench_dpi(pdf: Path, texts: list[str], tessdata: str, h, kind: str) -> dict:
    """Recall and CPU a page of docutrain's reading at each dpi, one process."""
    table = {}
    for dpi in DPI_TABLE:
        seconds, read = cpu_per_page(docutrain_reading, pdf, dpi, tessdata)
        recalls = [recall(e, g) for e, g in zip(texts, read)]
        table[dpi] = {"cpu_seconds_per_page": seconds, "pages_per_cpu_second": 1 / seconds,
                      "recall_median": h.med(recalls), "recall_min": min(recalls)}
        h.log(f"{kind}, read at {dpi} dpi: {seconds:.2f} s CPU/page, recall median {h.med(recalls):.3f}, min {min(recalls):.3f}")
    return table


if __name__ == "__main__":  # pragma: no cover - run through scripts/bench.py --ocr
    sys.exit("run: scripts/bench.py --ocr [--quick]")
