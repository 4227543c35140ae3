"""Spreadsheet exports (.csv), with the standard library's csv module.

The first row is the header. Every other row becomes one line that names
its values, `name: Ada; city: London`, so a chunk cut anywhere in a long
table still says what each value is (a bare `Ada, London` would not). A
page is a block of ROWS_PER_PAGE rows: page 3 holds rows 201-300.

The file is read twice, streaming (once to count pages, once to yield
them), so a 200 MB export never sits in memory. The delimiter (comma,
semicolon, tab or pipe) is the one the header line uses most; the encoding
is UTF-8, or Windows-1252 when the file's first megabyte is not UTF-8.
"""

from __future__ import annotations

import codecs
import csv
import sys
from pathlib import Path
from typing import Iterator

from docutrain_cli.errors import PermanentError, one_line

ROWS_PER_PAGE = 100
SNIFF_CHARS = 64 * 1024
ENCODING_PROBE_BYTES = 1 << 20
DELIMITERS = ",;\t|"


class CsvReader:
    def __init__(self, path: Path):
        self.path = path
        # A spreadsheet cell can hold a long text; the default limit is 128 KiB.
        csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
        self.encoding = self._guess_encoding()
        self.dialect = self._sniff()
        rows = sum(1 for _ in self._rows())
        self.header: list[str] = []
        self.page_count = max(1, -(-max(rows - 1, 0) // ROWS_PER_PAGE))

    def _open(self):
        try:
            return self.path.open("r", encoding=self.encoding, errors="replace", newline="")
        except OSError as exc:
            raise PermanentError(f"cannot read the file: {exc.strerror or exc}") from None

    def _guess_encoding(self) -> str:
        """UTF-8 if the start of the file is valid UTF-8, else Windows-1252:
        what Excel writes on Windows ("CSV" rather than "CSV UTF-8")."""
        try:
            with self.path.open("rb") as fh:
                head = fh.read(ENCODING_PROBE_BYTES)
        except OSError as exc:
            raise PermanentError(f"cannot read the file: {exc.strerror or exc}") from None
        try:
            codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
        except UnicodeDecodeError:
            return "cp1252"
        return "utf-8-sig"

    def _sniff(self):
        with self._open() as fh:
            sample = fh.read(SNIFF_CHARS)
        if "\0" in sample:
            raise PermanentError("not a CSV: cannot open (binary data)")
        # The header line decides: the candidate it holds most of. (csv.Sniffer
        # wants rows of equal length and gives up on real exports' ragged ones.)
        header = sample.split("\n", 1)[0]
        counts = {d: header.count(d) for d in DELIMITERS}
        best = max(DELIMITERS, key=lambda d: counts[d])  # first wins a tie: comma
        delimiter = best if counts[best] else ","

        class Dialect(csv.excel):
            pass

        Dialect.delimiter = delimiter
        return Dialect

    def _rows(self) -> Iterator[list[str]]:
        with self._open() as fh:
            reader = csv.reader(fh, self.dialect)
            try:
                yield from reader
            except csv.Error as exc:
                raise PermanentError(f"damaged CSV: row {reader.line_num}: {one_line(exc)}") from None

    def pages(self) -> Iterator[tuple[int, str]]:
        rows = self._rows()
        header = [h.strip() for h in next(rows, [])]
        self.header = header
        page, lines, count = 1, [], 0
        for values in rows:
            line = _named(header, values)
            if line:
                lines.append(line)
            count += 1
            if count == ROWS_PER_PAGE:
                yield page, "\n".join(lines)
                page, lines, count = page + 1, [], 0
        if count or page == 1:
            yield page, "\n".join(lines)

    def close(self) -> None:
        pass


def _named(header: list[str], values: list[str]) -> str:
    """'name: Ada; city: London'; columns past the header are 'column 7'."""
    parts = []
    for i, value in enumerate(values):
        value = " ".join(value.split())
        if not value:
            continue
        name = header[i] if i < len(header) and header[i] else f"column {i + 1}"
        parts.append(f"{name}: {value}")
    return "; ".join(parts)
