"""Session readers: the real samples parse with their published counts; bad records name file and line."""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from recsys.data.sessions import (
    read_diginetica,
    read_otto,
    read_sessions,
    read_yoochoose,
)
from recsys.errors import DataError

DATA_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data"


def _sample(folder: str, name: str) -> Path:
    path = DATA_ROOT / folder / name
    if not path.is_file():
        pytest.skip(f"sample {path} not found (see shared/data/README.md)")
    return path


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_bytes(text.encode())
    return path


def _events(sessions: list[int], items: list[int], timestamps: list[float], **strings: list[str]) -> pl.DataFrame:
    columns = {
        "session": pl.Series(sessions, dtype=pl.Int64),
        "item": pl.Series(items, dtype=pl.Int64),
        "timestamp": pl.Series(timestamps, dtype=pl.Float64),
    }
    columns.update({name: pl.Series(values, dtype=pl.String) for name, values in strings.items()})
    return pl.DataFrame(columns)


def _counts(frame: pl.DataFrame) -> tuple[int, int, int]:
    return frame.height, frame["session"].n_unique(), frame["item"].n_unique()


def _is_sorted(frame: pl.DataFrame) -> bool:
    return frame.equals(frame.sort("session", "timestamp", maintain_order=True))


# --- real samples (counts from each SOURCE.md) -----------------------------------------------------


def test_otto_sample_counts() -> None:
    frame = read_otto(_sample("otto", "train.jsonl"))
    assert frame.schema == pl.Schema(
        {"session": pl.Int64, "item": pl.Int64, "timestamp": pl.Float64, "type": pl.String}
    )
    assert _counts(frame) == (862, 20, 510)
    assert dict(frame["type"].value_counts().iter_rows()) == {"clicks": 800, "carts": 52, "orders": 10}
    # Session 0 starts at ts 1659304800025 ms (2022-07-31 22:00 UTC); the sample ends 2022-08-28.
    assert frame.row(0) == (0, 1517085, 1659304800.025, "clicks")
    assert frame["timestamp"].max() < 1_661_731_200  # 2022-08-29 00:00 UTC
    assert _is_sorted(frame)


@pytest.mark.parametrize(
    ("part", "counts"),
    [
        ("train_full", (70_278, 17_794, 2_933)),
        ("test", (13_568, 3_416, 1_771)),
        ("train_tr", (53_254, 13_629, 2_873)),
        ("train_valid", (16_539, 4_084, 2_029)),
    ],
)
def test_yoochoose_sample_counts(part: str, counts: tuple[int, int, int]) -> None:
    frame = read_yoochoose(_sample("yoochoose", f"yoochoose-clicks-100k_{part}.txt"))
    assert frame.schema == pl.Schema({"session": pl.Int64, "item": pl.Int64, "timestamp": pl.Float64})
    assert _counts(frame) == counts
    assert frame.group_by("session").len()["len"].min() == 2
    assert _is_sorted(frame)


def test_diginetica_sample_counts() -> None:
    frame = read_diginetica(_sample("diginetica", "sample_train-item-views.csv"))
    assert frame.schema == pl.Schema({"session": pl.Int64, "item": pl.Int64, "timestamp": pl.Float64})
    assert _counts(frame) == (12_391, 2_986, 7_139)
    # Dates 2016-01-03 .. 2016-06-01 (UTC midnight), plus timeframe milliseconds.
    days = (frame["timestamp"] // 86_400).cast(pl.Int64)
    assert (days.min(), days.max()) == (16_803, 16_953)
    assert _is_sorted(frame)


def test_read_sessions_dispatches_by_format(tmp_path: Path) -> None:
    path = _write(tmp_path, "a.txt", "SessionId\tItemId\tTime\n1\t2\t3.5\n")
    assert_frame_equal(read_sessions(path, "yoochoose"), _events([1], [2], [3.5]))
    with pytest.raises(DataError, match="unknown session format 'csv'"):
        read_sessions(path, "csv")


# --- hand-made files -------------------------------------------------------------------------------


def test_otto_converts_milliseconds_and_sorts_stably(tmp_path: Path) -> None:
    text = (
        '{"session": 5, "events": [{"aid": 7, "ts": 2500, "type": "clicks"}, '
        '{"aid": 8, "ts": 1000, "type": "carts"}, {"aid": 9, "ts": 1000, "type": "orders"}]}\n'
        "\n"
        '{"session": 2, "events": []}\n'
        '{"session": 1, "events": [{"aid": 3, "ts": 4000, "type": "clicks", "extra": true}]}\n'
    )
    frame = read_otto(_write(tmp_path, "a.jsonl", text))
    # Session 2 has no events; the two events at ts 1000 keep their file order.
    expected = _events([1, 5, 5, 5], [3, 8, 9, 7], [4.0, 1.0, 1.0, 2.5], type=["clicks", "carts", "orders", "clicks"])
    assert_frame_equal(frame, expected)


def test_yoochoose_tolerates_crlf_blank_lines_and_column_order(tmp_path: Path) -> None:
    text = "Time\tSessionId\tItemId\r\n20.5\t3\t10\r\n\r\n10.25\t3\t11\r\n5\t1\t12\r\n"
    frame = read_yoochoose(_write(tmp_path, "a.txt", text))
    assert_frame_equal(frame, _events([1, 3, 3], [12, 11, 10], [5.0, 10.25, 20.5]))


def test_diginetica_adds_timeframe_to_the_date(tmp_path: Path) -> None:
    text = "session_id;user_id;item_id;timeframe;eventdate\n1;NA;81766;526309;2016-05-09\n1;7;9654;75848;2016-05-09\n"
    frame = read_diginetica(_write(tmp_path, "a.csv", text))
    midnight = 1_462_752_000.0  # 2016-05-09 00:00 UTC
    assert_frame_equal(frame, _events([1, 1], [9654, 81766], [midnight + 75.848, midnight + 526.309]))


# --- malformed input -------------------------------------------------------------------------------

OTTO_EVENT = '{"aid": 1, "ts": 5, "type": "clicks"}'
OTTO_GOOD = f'{{"session": 0, "events": [{OTTO_EVENT}]}}\n'

BAD_OTTO = [
    # (text after one good line, line of the first bad record, expected message after "file:line: ")
    ('{"session": 1, "events": [\n', 2, "not valid JSON"),
    ("\n" + '{"session": 1 "events": []}\n', 3, "not valid JSON (Expecting ',' delimiter at column 15)"),
    ('{"events": [' + OTTO_EVENT + "]}\n", 2, "session is missing"),
    ('{"session": 1}\n', 2, "events is missing"),
    ('{"session": 1, "events": 5}\n', 2, 'not a session {"session": int'),
    ('{"session": 1, "events": [{"ts": 5, "type": "clicks"}]}\n', 2, "aid is missing"),
    ('{"session": 1, "events": [{"aid": 3, "type": "clicks"}]}\n', 2, "ts is missing"),
    ('{"session": 1, "events": [{"aid": 3, "ts": 5}]}\n', 2, "type is missing"),
    ('{"session": 1.5, "events": [' + OTTO_EVENT + "]}\n", 2, "session '1.5' is not a non-negative integer"),
    ('{"session": -1, "events": [' + OTTO_EVENT + "]}\n", 2, "session '-1' is not a non-negative integer"),
    ('{"session": 1, "events": [{"aid": true, "ts": 5, "type": "clicks"}]}\n', 2, "aid 'true' is not a non"),
    ('{"session": 1, "events": [{"aid": "x", "ts": 5, "type": "clicks"}]}\n', 2, "aid 'x' is not a non"),
    ('{"session": 1, "events": [{"aid": 1, "ts": -5, "type": "clicks"}]}\n', 2, "ts '-5' is not a non"),
    ('{"session": 1, "events": [{"aid": 1, "ts": 5, "type": "views"}]}\n', 2, "type 'views' is not one of"),
    # A bad value on line 2 is reported before a line the decoder cannot take (line 3).
    ('{"session": -2, "events": []}\n{"session": [1]}\n', 2, "session '-2' is not a non-negative integer"),
    ('[1, 2]\n{"session": -2, "events": []}\n', 2, 'not a session {"session": int'),
]


@pytest.mark.parametrize(("text", "line", "message"), BAD_OTTO)
def test_bad_otto_record_names_file_and_line(tmp_path: Path, text: str, line: int, message: str) -> None:
    path = _write(tmp_path, "bad.jsonl", OTTO_GOOD + text)
    with pytest.raises(DataError, match=re.escape(f"{path}:{line}: {message}")):
        read_otto(path)


YOOCHOOSE_HEADER = "SessionId\tItemId\tTime\n1\t2\t3.0\n"
DIGINETICA_HEADER = "session_id;user_id;item_id;timeframe;eventdate\n1;NA;2;3;2016-01-01\n"

BAD_TABLES = [
    # (reader, text, line, message)
    (read_yoochoose, YOOCHOOSE_HEADER + "1\t2\n", 3, "expected 3 fields, found 2"),
    (read_yoochoose, YOOCHOOSE_HEADER + "\n1\t2\t3\t4\n", 4, "expected 3 fields, found 4"),
    (read_yoochoose, YOOCHOOSE_HEADER + "1\tabc\t3.0\n", 3, "ItemId 'abc' is not a non-negative integer"),
    (read_yoochoose, YOOCHOOSE_HEADER + "1\t2.5\t3.0\n", 3, "ItemId '2.5' is not a non-negative integer"),
    (read_yoochoose, YOOCHOOSE_HEADER + "-4\t2\t3.0\n", 3, "SessionId '-4' is not a non-negative integer"),
    (read_yoochoose, YOOCHOOSE_HEADER + "1\t2\tnoon\n", 3, "Time 'noon' is not a finite number"),
    (read_yoochoose, YOOCHOOSE_HEADER + "1\t\t3.0\n", 3, "ItemId '' is not a non-negative integer"),
    # The earliest bad line is reported, whichever field or check fails on it.
    (read_yoochoose, YOOCHOOSE_HEADER + "1\tx\t3\n-1\t2\t3\n", 3, "ItemId 'x' is not a non-negative integer"),
    (read_yoochoose, YOOCHOOSE_HEADER + "1\tx\t3\n1\t2\n", 3, "ItemId 'x' is not a non-negative integer"),
    (read_diginetica, DIGINETICA_HEADER + "1;NA;2;3;2016-02-30\n-1;NA;2;3\n", 3, "eventdate '2016-02-30' is not"),
    (read_yoochoose, "Session\tItemId\tTime\n1\t2\t3\n", 1, "header 'Session\\tItemId\\tTime' lacks SessionId"),
    (read_yoochoose, "\n1\t2\t3\n", 1, "expected a header naming"),
    (read_diginetica, DIGINETICA_HEADER + "1;NA;2;3\n", 3, "expected 5 fields, found 4"),
    (read_diginetica, DIGINETICA_HEADER + "1;NA;NA;3;2016-01-01\n", 3, "item_id 'NA' is not a non-negative integer"),
    (read_diginetica, DIGINETICA_HEADER + "1;NA;2;-3;2016-01-01\n", 3, "timeframe '-3' is not a non-negative"),
    (read_diginetica, DIGINETICA_HEADER + "1;NA;2;3;2016-13-01\n", 3, "eventdate '2016-13-01' is not a date"),
    (read_diginetica, DIGINETICA_HEADER + "1;NA;2;3;yesterday\n", 3, "eventdate 'yesterday' is not a date"),
]


@pytest.mark.parametrize(("reader", "text", "line", "message"), BAD_TABLES)
def test_bad_table_row_names_file_and_line(tmp_path: Path, reader, text: str, line: int, message: str) -> None:
    path = _write(tmp_path, "bad.txt", text)
    with pytest.raises(DataError, match=re.escape(f"{path}:{line}: {message}")):
        reader(path)


@pytest.mark.parametrize("reader", [read_otto, read_yoochoose, read_diginetica])
def test_missing_empty_and_binary_files(tmp_path: Path, reader) -> None:
    absent = tmp_path / "absent.txt"
    with pytest.raises(DataError, match=re.escape(f"{absent}: no such file")):
        reader(absent)
    headers = {read_otto: "\n", read_yoochoose: YOOCHOOSE_HEADER, read_diginetica: DIGINETICA_HEADER}
    empty = _write(tmp_path, "empty.txt", headers[reader].splitlines()[0] + "\n")
    with pytest.raises(DataError, match=re.escape(f"{empty}: no events in the file")):
        reader(empty)
    binary = tmp_path / "blob.txt"
    binary.write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(DataError, match=re.escape(f"{binary}: not a text file")):
        reader(binary)
