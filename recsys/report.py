"""Plain-text tables for the terminal: a run's metrics, a split's statistics."""

from __future__ import annotations

import numpy as np

from recsys.data.config import DataConfig
from recsys.data.interactions import Split
from recsys.data.sessions.sessions import SessionSplit

__all__ = ["results_table", "session_table", "split_table"]


def results_table(result) -> str:
    """Validation (at the best epoch) and test means, one metric per row; after a refit, the selected
    checkpoint's test means and the refitted model's."""
    names = list(result.test) or list(result.valid)
    valid_header = f"valid (epoch {result.best_epoch})" if result.valid else ""
    test_header = "test" if result.refit_epochs is None else f"test (refit, {result.refit_epochs} epochs)"
    if result.selected_test:
        rows = [("metric", valid_header, "test (selected)", test_header)]
    else:
        rows = [("metric", valid_header, test_header)]
    for name in names:
        valid = result.valid.get(name)
        row = [name, "" if valid is None else f"{valid:.4f}"]
        if result.selected_test:
            row.append(f"{result.selected_test.get(name, float('nan')):.4f}")
        row.append(f"{result.test.get(name, float('nan')):.4f}")
        rows.append(tuple(row))
    return _format(rows)


def split_table(data: DataConfig, split: Split, seed: int) -> str:
    """Users, items, interactions and density of the whole dataset and of each part."""
    split_text = data.split.method
    if data.split.method in ("random", "temporal"):
        split_text += " " + "/".join(f"{ratio:g}" for ratio in data.split.ratios)
    if data.split.method == "given" and data.valid_file is None:
        split_text += f", validation = {data.split.valid_ratio:g} of train"
    header = f"{data.name} ({data.format}, {split_text} split, seed {seed})"
    rows = [("part", "users", "items", "interactions", "density")]
    whole = split.train.union(split.valid).union(split.test)
    for name, part in (*split.parts().items(), ("all", whole)):
        users = int(np.count_nonzero(part.user_counts()))
        items = int(np.count_nonzero(part.item_counts()))
        rows.append((name, f"{users:,}", f"{items:,}", f"{len(part):,}", f"{part.density:.4%}"))
    return header + "\n" + _format(rows)


def session_table(data: DataConfig, split: SessionSplit) -> str:
    """Sessions, events, items and mean session length of each part of a session split."""
    header = f"{data.name} ({data.format} sessions, {data.split.method} split; items of train: {split.n_items:,})"
    rows = [("part", "sessions", "events", "items", "mean length")]
    for name, part in split.parts().items():
        items = len(np.unique(part.items))
        mean = part.n_events / max(1, len(part))
        rows.append((name, f"{len(part):,}", f"{part.n_events:,}", f"{items:,}", f"{mean:.2f}"))
    return header + "\n" + _format(rows)


def _format(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = []
    for index, row in enumerate(rows):
        cells = [cell.ljust(widths[0]) if column == 0 else cell.rjust(widths[column])
                 for column, cell in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)
