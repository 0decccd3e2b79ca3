"""Spreadsheets as the importers read them: an XLSX sheet or a CSV export, one dict a row.

Cells keep their type from XLSX (numbers stay numbers: a density of ``2.0`` or a patient
number); CSV cells are text. Headers are matched by a normalised form (case, spaces and
punctuation ignored), so ``Breast density (ACR)`` and ``breast_density_acr`` are one
column. Row numbers are those a spreadsheet program shows (header = 1), so a leave-out
report can point at a row without quoting its contents.

>>> normalise_header("Pathology Classification/ Follow up")
'pathologyclassificationfollowup'
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

from VirtualBiopsyLib.errors import VirtualBiopsyError

SHEET_SUFFIXES = (".xlsx", ".xlsm", ".csv")
_NOT_ALNUM = re.compile(r"[^0-9a-z]+")


class ImportInputError(VirtualBiopsyError):
    """An input the importer cannot use at all (folder, sheet, option); names it."""


def normalise_header(name: object) -> str:
    return _NOT_ALNUM.sub("", str(name or "").lower())


def cell_text(value: object) -> str:
    """A cell as text: empty for none, ``2`` for a float 2.0, stripped otherwise.

    >>> cell_text(2.0), cell_text(None), cell_text(" B "), cell_text(12)
    ('2', '', 'B', '12')
    """
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


@dataclass(frozen=True)
class SheetRow:
    number: int  # as a spreadsheet program numbers it (header = 1) or the CSV line
    values: dict[str, object]  # header (as written) → cell value


@dataclass(frozen=True)
class Sheet:
    path: Path
    name: str | None  # the XLSX sheet's name; None for CSV
    columns: tuple[str, ...]
    rows: tuple[SheetRow, ...]
    notes: tuple[str, ...] = ()  # text of any other sheets' first column (provenance notices)

    def find_column(self, *candidates: str) -> str | None:
        """The header matching one of ``candidates`` (normalised), first candidate first."""
        by_form = {normalise_header(column): column for column in self.columns}
        for candidate in candidates:
            found = by_form.get(normalise_header(candidate))
            if found is not None:
                return found
        return None

    def require_column(self, role: str, *candidates: str) -> str:
        found = self.find_column(*candidates)
        if found is None:
            raise ImportInputError(
                f"{self.path}: no {role} column (looked for {', '.join(map(repr, candidates))}; "
                f"the sheet has {', '.join(map(repr, self.columns))})"
            )
        return found


def read_sheet(path: Path, sheet_name: str | None = None) -> Sheet:
    """Read an XLSX sheet (``sheet_name`` or the first) or a CSV file (``,``/``;``/tab).

    >>> read_sheet(Path("Radiology manual annotations.xlsx"), "all").columns[0]  # doctest: +SKIP
    'Image_name'
    """
    path = Path(path)
    if not path.is_file():
        raise ImportInputError(f"{path}: no such sheet file")
    suffix = path.suffix.lower()
    if suffix in (".xlsx", ".xlsm"):
        return _read_xlsx(path, sheet_name)
    if suffix == ".csv":
        return _read_csv(path)
    raise ImportInputError(f"{path}: not a sheet (expected .xlsx or .csv)")


def _table(path: Path, name: str | None, lines: list[tuple[int, list[object]]]) -> Sheet:
    lines = [(n, cells) for n, cells in lines if any(cell_text(c) for c in cells)]
    if not lines:
        raise ImportInputError(f"{path}: the sheet is empty")
    header_number, header_cells = lines[0]
    columns = [cell_text(cell) for cell in header_cells]
    if not any(columns):
        raise ImportInputError(f"{path}: the first row has no column names")
    rows = []
    for number, cells in lines[1:]:
        values = {
            column: cells[index] if index < len(cells) else None
            for index, column in enumerate(columns)
            if column
        }
        rows.append(SheetRow(number, values))
    return Sheet(path, name, tuple(c for c in columns if c), tuple(rows))


def _read_xlsx(path: Path, sheet_name: str | None) -> Sheet:
    from openpyxl import load_workbook

    try:
        workbook = load_workbook(path, read_only=True, data_only=True)
    except Exception as error:  # openpyxl raises several kinds for a bad file
        raise ImportInputError(f"{path}: cannot read the workbook ({error})") from None
    try:
        names = workbook.sheetnames
        if sheet_name is None:
            sheet_name = names[0]
        if sheet_name not in names:
            raise ImportInputError(
                f"{path}: no sheet {sheet_name!r} (sheets: {', '.join(map(repr, names))})"
            )
        lines = [
            (number, list(cells))
            for number, cells in enumerate(
                workbook[sheet_name].iter_rows(values_only=True), start=1
            )
        ]
        notes = tuple(
            cell_text(cells[0])
            for other in names
            if other != sheet_name
            for cells in workbook[other].iter_rows(values_only=True, max_col=1)
            if cells and cell_text(cells[0])
        )
    finally:
        workbook.close()
    table = _table(path, sheet_name, lines)
    return Sheet(table.path, table.name, table.columns, table.rows, notes)


def _read_csv(path: Path) -> Sheet:
    data = path.read_bytes()
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):  # Excel's "Unicode text"
        text = data.decode("utf-16", errors="replace")
    else:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            text = data.decode("cp1252", errors="replace")  # Excel's CSV export on Windows
    first = text.splitlines()[0] if text else ""
    delimiter = max((",", ";", "\t"), key=first.count)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    limit = csv.field_size_limit(max(len(text), 131072))  # a long polygon is one cell
    try:
        lines = [(reader.line_num, list(cells)) for cells in reader]
    except csv.Error as error:
        raise ImportInputError(
            f"{path}: not a readable CSV (line {reader.line_num}: {error})"
        ) from None
    finally:
        csv.field_size_limit(limit)
    return _table(path, None, lines)
