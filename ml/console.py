"""Plain-text tables for people at a terminal (``pmx demo``, ``pmx models list``).

Commands print JSON for scripts (``--json``) and these tables for people: columns padded to the
widest cell and fitted to the terminal, so that a line does not wrap into the next row. When a
table is too wide its optional columns go; the columns that carry the numbers are never cut. A long
path is shortened where it says least (:func:`shorten_path`).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Sequence

ELLIPSIS = "…"
GAP = "  "
#: A path's part is not shortened below this by :func:`shorten_path` (four characters each side).
MIN_PART = 9


def terminal_width() -> int:
    """Columns of the terminal (``COLUMNS`` wins; 80 when stdout is not a terminal)."""
    return shutil.get_terminal_size().columns


def elide_middle(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters by replacing its middle with an ellipsis: a path
    keeps its start (where it lives) and its end (the file)."""
    if len(text) <= width:
        return text
    if width <= len(ELLIPSIS):
        return ELLIPSIS[:max(width, 0)]
    tail = (width - len(ELLIPSIS) + 1) // 2
    head = width - len(ELLIPSIS) - tail
    return f"{text[:head]}{ELLIPSIS}{text[len(text) - tail:]}"


def shorten_path(path: str, width: int) -> str:
    """``path`` cut to ``width`` where it says least: its longest part (a run id) loses its middle
    first, down to :data:`MIN_PART` characters; then its leading folders give way to an ellipsis;
    only then does the middle of what is left go. Both ends of an id stay, to tell rows apart."""
    if len(path) <= width:
        return path
    parts = path.split("/")
    longest = max(range(len(parts)), key=lambda i: len(parts[i]))
    excess = len(path) - width
    parts[longest] = elide_middle(parts[longest], max(len(parts[longest]) - excess, MIN_PART))
    while len("/".join(parts)) > width and len(parts) > 2:
        parts = [ELLIPSIS, *parts[2:]] if parts[0] == ELLIPSIS else [ELLIPSIS, *parts[1:]]
    return elide_middle("/".join(parts), width)


def fit_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    width: int,
    right: Iterable[int] = (),
    optional: Sequence[int] = (),
) -> list[str]:
    """The table's lines (header first), each cell padded to its column's widest.

    ``right``: columns aligned right (numbers). ``optional``: columns dropped, in this order, while
    the table is wider than ``width``; a table that still does not fit is printed wider, never cut."""
    right = set(right)
    natural = [max(len(str(cell)) for cell in [header, *(row[i] for row in rows)])
               for i, header in enumerate(headers)]
    shown = list(range(len(headers)))
    for column in optional:
        if table_width([natural[i] for i in shown]) <= width:
            break
        shown.remove(column)

    def line(cells: Sequence[str]) -> str:
        return GAP.join(str(cells[i]).rjust(natural[i]) if i in right else str(cells[i]).ljust(natural[i])
                        for i in shown).rstrip()

    return [line(headers), *(line(row) for row in rows)]


def table_width(widths: Sequence[int]) -> int:
    """The width of a table whose columns are ``widths`` wide."""
    return sum(widths) + len(GAP) * (len(widths) - 1)
