"""Strict reading of the CSV files that devices replay.

Python's csv module, left to itself, joins every line after an unclosed quote
into one field, and reports a non-UTF-8 byte at its offset in an 8 KiB
decoding chunk rather than at its line. Either way a damaged file could lose
rows without a clear error. ``read_records`` instead raises ``CsvFormatError``
that names the file and the line where the problem starts.

Sensor values, timestamps and labels never contain line breaks, so a record
must fit on one line. A quoted field that runs over several lines is an
error, because it is almost always a stray quote that swallows the rows after it.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

# Undecodable bytes 0x80 to 0xff become these lone surrogates under the
# "surrogateescape" error handler. Valid UTF-8 never decodes to them.
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")


class CsvFormatError(ValueError):
    """A CSV file that is not valid UTF-8 or not valid CSV. The message names the file and line."""


def open_csv(path: Path) -> TextIO:
    """Open a CSV file for ``read_records``, skipping a UTF-8 byte order mark.

    Raises:
        OSError: the file cannot be opened.
    """
    return path.open(newline="", encoding="utf-8-sig", errors="surrogateescape")


def read_records(file: TextIO, path: Path, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """Yield the line number (1 for the first line) and the fields of each record.

    A blank line yields an empty list. ``file`` must come from ``open_csv``.

    Raises:
        CsvFormatError: a line is not UTF-8, is not valid CSV, or a quoted
            field does not end on the line where it starts.
    """
    line_number = 0

    def lines() -> Iterator[str]:
        nonlocal line_number
        for line in file:
            line_number += 1
            escaped = _ESCAPED_BYTE.search(line)
            if escaped is not None:
                byte = ord(escaped.group()) - 0xDC00
                raise CsvFormatError(
                    f"{path} line {line_number}: invalid UTF-8, byte 0x{byte:02x} "
                    f"at character {escaped.start() + 1}"
                )
            yield line

    reader = csv.reader(lines(), delimiter=delimiter, strict=True)
    while True:
        first_line = line_number + 1
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            raise CsvFormatError(_describe_csv_error(path, first_line, line_number, err)) from err
        if line_number > first_line:
            raise CsvFormatError(
                f"{path} line {first_line}: invalid CSV: a quoted field runs from this line "
                f"to line {line_number}, so a quote is probably not closed "
                "(fields must not contain line breaks)"
            )
        yield first_line, fields


def _describe_csv_error(path: Path, first_line: int, last_line: int, err: csv.Error) -> str:
    if str(err) == "unexpected end of data":
        return f"{path} line {first_line}: invalid CSV: a quote opened here is never closed"
    if last_line > first_line:
        return (
            f"{path} line {first_line}: invalid CSV: a quoted field runs from this line "
            f"to line {last_line}, so a quote is probably not closed ({err})"
        )
    return f"{path} line {first_line}: invalid CSV: {err}"
