"""Session readers: a click-log file -> one validated polars frame of events.

Every reader returns Int64 ``session`` and ``item`` (original ids, non-negative), Float64 ``timestamp``
(seconds) and, for OTTO, Utf8 ``type`` (clicks/carts/orders); rows are sorted stably by
(session, timestamp). The first malformed record raises ``DataError("{path}:{line}: {reason}")`` with a
1-based line number, as ``recsys.data.readers`` does. Formats (../shared/data/README.md):

- ``otto``: JSON Lines, ``{"session": int, "events": [{"aid": int, "ts": int (ms), "type": str}, ...]}``.
- ``yoochoose``: tab-separated, header ``SessionId  ItemId  Time`` (unix seconds), session-rec's
  prepared files.
- ``diginetica``: ``;``-separated, header ``session_id;user_id;item_id;timeframe;eventdate``;
  ``timeframe`` is milliseconds added to ``eventdate`` (``YYYY-MM-DD``, UTC midnight).
- ``sequences``: one session per line, its item ids separated by spaces, in time order, sessions in
  time order (the SR-GNN / GCE-GNN benchmark files: ``yoochoose1_64-srgnn``, ``diginetica-srgnn``,
  ``tmall-gcegnn``, ``nowplaying-gcegnn``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import polars as pl

from recsys.errors import DataError

__all__ = [
    "EVENT_TYPES", "SESSION_READERS", "read_diginetica", "read_otto", "read_sequences", "read_sessions", "read_yoochoose",
]

EVENT_TYPES = ("clicks", "carts", "orders")
_SECONDS_PER_DAY = 86_400
# Ids and times are decoded as text, then cast strictly: polars would read `true` or `1.5` as 1 into Int64.
_OTTO_SCHEMA = pl.Struct(
    {
        "session": pl.String,
        "events": pl.List(pl.Struct({"aid": pl.String, "ts": pl.String, "type": pl.String})),
    }
)


def read_otto(path: Path) -> pl.DataFrame:
    """Read an OTTO ``.jsonl`` file: one session per line.

    Returns:
        ``session``, ``item`` (the ``aid``), ``timestamp`` (``ts`` / 1000) and ``type``, one row per event.
    """
    lines = _lines(path)
    try:
        decoded = _decode(lines)
    except pl.exceptions.PolarsError:
        # The decoder fails for the whole column; find the first line it cannot take, but report an
        # earlier bad value first, so the message always names the first malformed record.
        bad = _first_undecodable(lines)
        _otto_events(_decode(lines.head(bad)), path)
        line, text = lines.row(bad)
        raise DataError(f"{path}:{line}: {_json_reason(text)}") from None
    return _sorted(_otto_events(decoded, path), path)


def read_yoochoose(path: Path) -> pl.DataFrame:
    """Read a yoochoose (session-rec prepared) ``.txt``: tab-separated ``SessionId ItemId Time``.

    Returns:
        ``session``, ``item``, ``timestamp`` (``Time``, already seconds).
    """
    fields = _delimited(path, "\t", ("SessionId", "ItemId", "Time"))
    session, item = _integer(fields["SessionId"]), _integer(fields["ItemId"])
    time = fields["Time"].cast(pl.Float64, strict=False)
    _raise_first(
        path,
        fields,
        [
            _field_count(fields),
            _value(_not_id(session), "SessionId", fields["SessionId"], _NOT_ID),
            _value(_not_id(item), "ItemId", fields["ItemId"], _NOT_ID),
            _value(time.is_null() | ~time.is_finite(), "Time", fields["Time"], "is not a finite number"),
        ],
    )
    return _sorted(pl.DataFrame({"session": session, "item": item, "timestamp": time}), path)


def read_diginetica(path: Path) -> pl.DataFrame:
    """Read Diginetica's ``train-item-views.csv``: ``;``-separated, ``user_id`` (often ``NA``) ignored.

    Returns:
        ``session``, ``item``, ``timestamp`` = ``eventdate`` (UTC midnight) in seconds + ``timeframe`` / 1000.
    """
    fields = _delimited(path, ";", ("session_id", "user_id", "item_id", "timeframe", "eventdate"))
    session, item, milliseconds = (_integer(fields[name]) for name in ("session_id", "item_id", "timeframe"))
    date = fields["eventdate"].str.strptime(pl.Date, "%Y-%m-%d", strict=False)
    _raise_first(
        path,
        fields,
        [
            _field_count(fields),
            _value(_not_id(session), "session_id", fields["session_id"], _NOT_ID),
            _value(_not_id(item), "item_id", fields["item_id"], _NOT_ID),
            _value(_not_id(milliseconds), "timeframe", fields["timeframe"], _NOT_ID),
            _value(date.is_null(), "eventdate", fields["eventdate"], "is not a date (YYYY-MM-DD)"),
        ],
    )
    midnight = date.cast(pl.Int64) * _SECONDS_PER_DAY  # days since 1970-01-01 -> seconds
    frame = pl.DataFrame({"session": session, "item": item, "timestamp": midnight + milliseconds / 1000})
    return _sorted(frame.cast({"timestamp": pl.Float64}), path)


def read_sequences(path: Path) -> pl.DataFrame:
    """Read a file of item sequences: one session per line, item ids separated by whitespace.

    The files have no times; the order is the time (events within a line, lines within the file).

    Returns:
        ``session`` (the 1-based line number), ``item``, ``timestamp`` (the event's position in the
        file: 0, 1, 2, ... over all lines, so later sessions and events are later).
    """
    lines = _lines(path)
    if lines.height == 0:
        raise DataError(f"{path}: no events in the file")
    events = lines.select(
        "line", pl.col("text").str.strip_chars().str.replace_all(r"\s+", " ").str.split(" ").alias("raw")
    ).explode("raw")
    item = _integer(events["raw"])
    _raise_first(path, events, [_value(_not_id(item), "item", events["raw"], _NOT_ID)])
    return pl.DataFrame({
        "session": events["line"].cast(pl.Int64),
        "item": item,
        "timestamp": pl.int_range(events.height, eager=True).cast(pl.Float64),
    })


SESSION_READERS: dict[str, Callable[[Path], pl.DataFrame]] = {
    "otto": read_otto,
    "yoochoose": read_yoochoose,
    "diginetica": read_diginetica,
    "sequences": read_sequences,
}


def read_sessions(path: Path, format: str) -> pl.DataFrame:
    """Read a session file with the reader named by ``format`` (a key of ``SESSION_READERS``)."""
    if format not in SESSION_READERS:
        raise DataError(f"{path}: unknown session format {format!r} (known: {', '.join(SESSION_READERS)})")
    return SESSION_READERS[format](path)


# --- shared helpers ------------------------------------------------------------------------------


def _lines(path: Path) -> pl.DataFrame:
    """Non-blank lines as ``(line, text)``, ``line`` 1-based (blank lines are skipped, their numbers kept)."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a text file") from None
    lines = pl.DataFrame({"text": pl.Series(text.splitlines(), dtype=pl.String)})
    return lines.with_row_index("line", offset=1).filter(pl.col("text").str.strip_chars() != "")


def _delimited(path: Path, separator: str, needed: tuple[str, ...]) -> pl.DataFrame:
    """Split a headed file into ``line``, ``n_fields``, ``expected`` and one stripped String column per
    needed field (null where a line is too short); ``_field_count`` checks the count against the header.
    """
    lines = _lines(path)
    if lines.height == 0 or lines["line"][0] != 1:
        raise DataError(f"{path}:1: expected a header naming {separator.join(needed)!r}")
    header = [name.strip().lstrip("\ufeff") for name in lines["text"][0].split(separator)]
    missing = [name for name in needed if name not in header]
    if missing:
        raise DataError(f"{path}:1: header {lines['text'][0]!r} lacks {', '.join(missing)}")
    body = lines.slice(1).with_columns(pl.col("text").str.split(separator).alias("field"))
    if body.height == 0:
        raise DataError(f"{path}: no events in the file")
    field = pl.col("field").list
    return body.select(
        "line",
        field.len().alias("n_fields"),
        pl.lit(len(header)).alias("expected"),
        *(field.get(header.index(name), null_on_oob=True).str.strip_chars().alias(name) for name in needed),
    )


_NOT_ID = "is not a non-negative integer"
# One check: the rows that fail it, and the message for a failing row.
_Check = tuple[pl.Series, Callable[[int], str]]


def _integer(raw: pl.Series) -> pl.Series:
    """Text -> Int64, null where the text is not an integer."""
    return raw.cast(pl.Int64, strict=False)


def _not_id(values: pl.Series) -> pl.Series:
    return values.is_null() | (values < 0)


def _field_count(fields: pl.DataFrame) -> _Check:
    wrong = fields["n_fields"] != fields["expected"]
    return wrong, lambda row: f"expected {fields['expected'][row]} fields, found {fields['n_fields'][row]}"


def _value(bad: pl.Series, field: str, values: pl.Series, reason: str) -> _Check:
    """A check of one field: ``values`` are its raw values, quoted in the message."""

    def message(row: int) -> str:
        return f"{field} is missing" if values[row] is None else f"{field} {values[row]!r} {reason}"

    return bad, message


def _raise_first(path: Path, frame: pl.DataFrame, checks: list[_Check]) -> None:
    """Raise for the earliest row that fails a check (the first failing check within that row).

    A null in a check's rows counts as failing.
    """
    found = [(row, order) for order, (bad, _) in enumerate(checks) if (row := _first(bad)) is not None]
    if found:
        row, order = min(found)
        raise DataError(f"{path}:{frame['line'][row]}: {checks[order][1](row)}")


def _first(bad: pl.Series) -> int | None:
    flags = bad.fill_null(True)
    return int(flags.arg_max()) if flags.any() else None


def _sorted(frame: pl.DataFrame, path: Path) -> pl.DataFrame:
    if frame.height == 0:
        raise DataError(f"{path}: no events in the file")
    # Stable: events with equal timestamps keep their file order (OTTO has carts and orders at one ts).
    return frame.sort("session", "timestamp", maintain_order=True)


# --- OTTO ----------------------------------------------------------------------------------------


def _decode(lines: pl.DataFrame) -> pl.DataFrame:
    """``(line, text)`` -> ``(line, text, record)``; raises a PolarsError if a line does not fit the schema."""
    return lines.with_columns(pl.col("text").str.json_decode(_OTTO_SCHEMA).alias("record"))


def _otto_events(decoded: pl.DataFrame, path: Path) -> pl.DataFrame:
    """Decoded ``(line, text, record)`` -> one row per event; raises for the first bad field in file order."""
    record = pl.col("record")
    events = (
        decoded.select(
            "line",
            record.struct.field("session"),
            record.struct.field("events"),
            record.struct.field("events").list.len().alias("n_events"),
        )
        # An empty or null list becomes one row of nulls (told apart by n_events), so every line is checked.
        .explode("events", empty_as_null=True, keep_nulls=True)
        .unnest("events")
    )
    has_event = events["n_events"].fill_null(0) > 0
    session, item, ts = _integer(events["session"]), _integer(events["aid"]), _integer(events["ts"])
    unknown_type = has_event & ~events["type"].is_in(EVENT_TYPES).fill_null(False)
    # In the order one would check the fields of one line.
    _raise_first(
        path,
        events,
        [
            _value(_not_id(session), "session", events["session"], _NOT_ID),
            _value(events["n_events"].is_null(), "events", events["n_events"], "is not a list"),
            _value(has_event & _not_id(item), "aid", events["aid"], _NOT_ID),
            _value(has_event & _not_id(ts), "ts", events["ts"], _NOT_ID + " (unix milliseconds)"),
            _value(unknown_type, "type", events["type"], f"is not one of {', '.join(EVENT_TYPES)}"),
        ],
    )
    frame = pl.DataFrame({"session": session, "item": item, "timestamp": ts / 1000, "type": events["type"]})
    return frame.filter(has_event)


def _first_undecodable(lines: pl.DataFrame) -> int:
    """Index of the first line polars cannot decode into ``_OTTO_SCHEMA`` (bisection: O(n log n) work
    in vectorised decodes, and the same rules as the fast path, unlike a separate Python parser)."""
    low, high = 0, lines.height  # lines[:low] decode; lines[:high] do not
    while high - low > 1:
        middle = (low + high) // 2
        try:
            _decode(lines.head(middle))
            low = middle
        except pl.exceptions.PolarsError:
            high = middle
    return high - 1


def _json_reason(text: str) -> str:
    try:
        json.loads(text)
    except json.JSONDecodeError as error:
        return f"not valid JSON ({error.msg} at column {error.colno})"
    return 'not a session {"session": int, "events": [{"aid": int, "ts": int, "type": str}, ...]}'
