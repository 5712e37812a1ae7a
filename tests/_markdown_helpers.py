"""Reading the markdown tables that the benchmark scripts print (for the benchmark tests)."""

from __future__ import annotations


def markdown_tables(markdown: str) -> list[list[list[str]]]:
    """Every markdown table as a list of rows of cells (header first, separator dropped)."""
    tables, current = [], []
    for line in [*markdown.splitlines(), ""]:
        if line.startswith("|"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if not all(set(cell) <= set("-: ") for cell in cells):
                current.append(cells)
        elif current:
            tables.append(current)
            current = []
    return tables
