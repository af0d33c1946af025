"""Readers: interaction files -> a validated polars frame ``(user, item[, rating][, timestamp])``.

Every reader returns original ids as Int64 (non-negative), ``rating`` and ``timestamp`` as Float64, and
raises ``DataError`` naming the file and line of the first bad value. Formats (../shared/data/README.md):

- ``lightgcn``: ``user item item ...`` per line, spaces (LightGCN / NGCF splits; CRLF tolerated).
- ``recbole``: RecBole atomic ``.inter``: tab-separated with a ``name:type`` header.
- ``csv`` / ``tsv`` / ``parquet``: a table; ``columns`` maps our names to the file's.
- ``dense``: a whitespace-separated ``users x items`` matrix of ratings, 0 = unobserved (Coat's
  ``train.ascii`` / ``test.ascii``, Schnabel et al. 2016); row and column positions are the ids.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import polars as pl

from recsys.errors import DataError

__all__ = ["read_interactions", "FORMATS"]

FORMATS = ("lightgcn", "recbole", "csv", "tsv", "parquet", "dense")
_ID_COLUMNS = ("user", "item")
_FLOAT_COLUMNS = ("rating", "timestamp")


def read_interactions(
    path: Path,
    format: str,
    columns: Mapping[str, str | None] | None = None,
    separator: str | None = None,
    has_header: bool = True,
) -> pl.DataFrame:
    """Read one interaction file.

    Args:
        path: the file.
        format: one of ``FORMATS``.
        columns: our column name (user, item, rating, timestamp) -> the file's column name, or None
            to ignore it. Unused by ``lightgcn``.
        separator: field separator for csv/tsv (default ``,`` / tab).
        has_header: whether a csv/tsv file starts with a header row.

    Returns:
        A frame with Int64 ``user``, ``item`` and, when mapped and present, Float64 ``rating`` and
        ``timestamp``.
    """
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if format == "lightgcn":
        return _read_lightgcn(path)
    if format == "dense":
        return _read_dense(path)
    if format not in FORMATS:
        raise DataError(f"{path}: unknown format {format!r} (known: {', '.join(FORMATS)})")
    columns = dict(columns or {})
    if format == "parquet":
        try:
            raw = pl.read_parquet(path)
        except (pl.exceptions.PolarsError, OSError) as error:
            raise DataError(f"{path}: not a readable parquet file ({_first_line(error)})") from None
        header_lines = 0
    else:
        default_separator = "\t" if format in ("tsv", "recbole") else ","
        try:
            raw = pl.read_csv(
                path,
                separator=separator or default_separator,
                has_header=has_header or format == "recbole",
                infer_schema=False,
                quote_char='"' if format == "csv" else None,
            )
        except (pl.exceptions.PolarsError, OSError) as error:
            raise DataError(f"{path}: cannot parse as {format} ({_first_line(error)})") from None
        if format == "recbole":
            # RecBole headers are `name:type`; the name is what configs refer to.
            raw = raw.rename({name: name.split(":", 1)[0] for name in raw.columns})
        if not has_header and format != "recbole":
            raw = raw.rename({name: str(index) for index, name in enumerate(raw.columns)})
        header_lines = 1 if (has_header or format == "recbole") else 0
    return _typed_frame(raw, path, columns, header_lines)


def _read_lightgcn(path: Path) -> pl.DataFrame:
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a text file") from None
    lines = pl.DataFrame({"text": pl.Series(text.splitlines(), dtype=pl.String)}).with_row_index("line", offset=1)
    tokens = (
        lines.with_columns(pl.col("text").str.extract_all(r"\S+").alias("token"))
        .filter(pl.col("token").list.len() > 0)
        .select(
            "line",
            pl.col("token").list.first().alias("user"),
            pl.col("token").list.slice(1).alias("item"),
        )
        .explode("item")
        .drop_nulls("item")
    )
    return _typed_frame(tokens, path, {"user": "user", "item": "item"}, header_lines=0, line_column="line")


def _read_dense(path: Path) -> pl.DataFrame:
    """Non-zero cells of a dense rating matrix as ``(user, item, rating)``: row, column, value."""
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a text file") from None
    rows = [(number, line.split()) for number, line in enumerate(lines, start=1) if line.strip()]
    if not rows:
        raise DataError(f"{path}: no interactions in the file")
    width = len(rows[0][1])
    for number, cells in rows:
        if len(cells) != width:
            raise DataError(f"{path}:{number}: {len(cells)} columns, but the first row has {width}")
    try:
        matrix = np.array([cells for _, cells in rows], dtype=np.float64)
    except ValueError:
        number, value = next((n, c) for n, cells in rows for c in cells if not _is_number(c))
        raise DataError(f"{path}:{number}: rating {value!r} is not a number") from None
    if np.isnan(matrix).any() or (matrix < 0).any():
        row = int(np.argwhere(np.isnan(matrix) | (matrix < 0))[0, 0])
        raise DataError(f"{path}:{rows[row][0]}: ratings must be non-negative numbers (0 = unobserved)")
    users, items = np.nonzero(matrix)
    return pl.DataFrame({"user": users.astype(np.int64), "item": items.astype(np.int64),
                         "rating": matrix[users, items]})


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _typed_frame(
    raw: pl.DataFrame,
    path: Path,
    columns: Mapping[str, str | None],
    header_lines: int,
    line_column: str | None = None,
) -> pl.DataFrame:
    """Cast mapped columns to our types; the first value that does not cast names its line."""
    if line_column is None:
        raw = raw.with_row_index("__line", offset=1 + header_lines)
        line_column = "__line"
        # Blank lines read as rows of nulls; skip them (as pandas and RecBole do), keeping line numbers.
        values = [column for column in raw.columns if column != line_column]
        raw = raw.filter(~pl.all_horizontal(pl.col(values).is_null()))
    selected: dict[str, str] = {}
    for ours in (*_ID_COLUMNS, *_FLOAT_COLUMNS):
        theirs = columns.get(ours, ours if ours in _ID_COLUMNS else None)
        if theirs is None:
            continue
        if theirs not in raw.columns:
            if ours in _ID_COLUMNS:
                found = ", ".join(c for c in raw.columns if c != line_column)
                raise DataError(f"{path}: no {ours} column {theirs!r} (columns: {found})")
            continue
        selected[ours] = theirs
    if raw.height == 0:
        raise DataError(f"{path}: no interactions in the file")

    casts = []
    for ours, theirs in selected.items():
        source = pl.col(theirs)
        if raw.schema[theirs] == pl.String:
            source = source.str.strip_chars()
        if ours in _ID_COLUMNS and raw.schema[theirs].is_float():
            # A float id is acceptable only when it is a whole number (parquet written by pandas).
            source = pl.when(source == source.floor()).then(source)
        target = pl.Int64 if ours in _ID_COLUMNS else pl.Float64
        casts.append(source.cast(target, strict=False).alias(ours))
    typed = raw.select(pl.col(line_column), *casts)

    for ours, theirs in selected.items():
        kind = "a non-negative integer" if ours in _ID_COLUMNS else "a number"
        bad = typed[ours].is_null() | (typed[ours] < 0 if ours in _ID_COLUMNS else typed[ours].is_nan())
        if bad.any():
            row = int(bad.arg_max())
            value = raw[theirs][row]
            line = typed[line_column][row]
            raise DataError(f"{path}:{line}: {ours} {value!r} is not {kind}")
    return typed.drop(line_column)


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
