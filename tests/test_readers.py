"""Readers: every format reads to one typed frame; bad input is a DataError naming the file and line."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from recsys.data.readers import read_interactions
from recsys.errors import DataError

ML_COLUMNS = {"user": "user_id", "item": "item_id", "rating": "rating", "timestamp": "timestamp"}


def _write(folder: Path, name: str, text: str) -> Path:
    """Write ``text`` byte for byte (no newline translation, so CRLF stays CRLF)."""
    path = folder / name
    path.write_bytes(text.encode())
    return path


def _frame(users: list[int], items: list[int], **floats: list[float]) -> pl.DataFrame:
    columns: dict[str, pl.Series] = {
        "user": pl.Series(users, dtype=pl.Int64),
        "item": pl.Series(items, dtype=pl.Int64),
    }
    columns.update({name: pl.Series(values, dtype=pl.Float64) for name, values in floats.items()})
    return pl.DataFrame(columns)


# --- formats -------------------------------------------------------------------------------------


@pytest.mark.parametrize("newline", ["\n", "\r\n"], ids=["lf", "crlf"])
def test_lightgcn_tolerates_crlf_extra_spaces_and_users_without_items(tmp_path: Path, newline: str) -> None:
    # User 2 has no items; user 1's line has runs of spaces and a trailing space.
    text = newline.join(["0 1 2", "1   3 ", "2", "3  0   4", ""])
    frame = read_interactions(_write(tmp_path, "train.txt", text), "lightgcn")
    assert_frame_equal(frame, _frame([0, 0, 1, 3, 3], [1, 2, 3, 0, 4]))


def test_recbole_header_types_are_dropped_from_names(tmp_path: Path) -> None:
    text = (
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        "196\t242\t3\t881250949\n"
        "186\t302\t3.5\t891717742\n"
    )
    frame = read_interactions(_write(tmp_path, "x.inter", text), "recbole", columns=ML_COLUMNS)
    expected = _frame([196, 186], [242, 302], rating=[3.0, 3.5], timestamp=[881250949.0, 891717742.0])
    assert_frame_equal(frame, expected)


def test_csv_maps_columns_by_name_and_ignores_the_rest(tmp_path: Path) -> None:
    text = "when,iid,extra,uid,stars\n100,7,x,1,4.5\n50,8,y,2,1\n"
    path = _write(tmp_path, "log.csv", text)
    columns = {"user": "uid", "item": "iid", "rating": "stars", "timestamp": "when"}
    frame = read_interactions(path, "csv", columns=columns)
    assert_frame_equal(frame, _frame([1, 2], [7, 8], rating=[4.5, 1.0], timestamp=[100.0, 50.0]))

    without_rating = read_interactions(path, "csv", columns={**columns, "rating": None})
    assert without_rating.columns == ["user", "item", "timestamp"]


def test_a_mapped_rating_column_that_is_absent_is_left_out(tmp_path: Path) -> None:
    # ColumnsConfig maps rating/timestamp by default; files without them must still read.
    columns = {"user": "user", "item": "item", "rating": "rating", "timestamp": "timestamp"}
    frame = read_interactions(_write(tmp_path, "a.csv", "user,item\n1,2\n"), "csv", columns=columns)
    assert_frame_equal(frame, _frame([1], [2]))


def test_tsv_and_custom_separators(tmp_path: Path) -> None:
    tsv = read_interactions(_write(tmp_path, "a.tsv", "user\titem\n 1 \t2\n3\t4\n"), "tsv")
    semicolon = read_interactions(_write(tmp_path, "a.csv", "user;item\n1;2\n3;4\n"), "csv", separator=";")
    assert_frame_equal(tsv, _frame([1, 3], [2, 4]))
    assert_frame_equal(semicolon, _frame([1, 3], [2, 4]))


@pytest.mark.parametrize("format", ["csv", "tsv"])
def test_blank_lines_are_skipped_and_line_numbers_kept(tmp_path: Path, format: str) -> None:
    separator = "," if format == "csv" else "\t"
    good = _write(tmp_path, "good", f"user{separator}item\n1{separator}2\n\n3{separator}4\n\n")
    assert_frame_equal(read_interactions(good, format), _frame([1, 3], [2, 4]))
    bad = _write(tmp_path, "bad", f"user{separator}item\n\n1{separator}2\n\nx{separator}4\n")
    with pytest.raises(DataError, match=re.escape(f"{bad}:5: user 'x' is not a non-negative integer")):
        read_interactions(bad, format)


def test_headerless_csv_uses_positional_column_names(tmp_path: Path) -> None:
    path = _write(tmp_path, "triples.txt", "5,7,4.0\n6,8,2\n")
    columns = {"user": "0", "item": "1", "rating": "2", "timestamp": None}
    frame = read_interactions(path, "csv", columns=columns, has_header=False)
    assert_frame_equal(frame, _frame([5, 6], [7, 8], rating=[4.0, 2.0]))


def test_parquet_with_whole_float_ids_and_narrow_ints(tmp_path: Path) -> None:
    path = tmp_path / "a.parquet"
    pl.DataFrame(
        {
            "u": pl.Series([1.0, 2.0], dtype=pl.Float64),  # as pandas writes ids with missing values
            "i": pl.Series([3, 4], dtype=pl.Int32),
            "r": pl.Series([5, 1], dtype=pl.Int8),
        }
    ).write_parquet(path)
    frame = read_interactions(path, "parquet", columns={"user": "u", "item": "i", "rating": "r"})
    assert_frame_equal(frame, _frame([1, 2], [3, 4], rating=[5.0, 1.0]))


@settings(max_examples=25, deadline=None)
@given(pairs=st.lists(st.tuples(st.integers(0, 10**9), st.integers(0, 10**9)), min_size=1, max_size=30))
def test_every_format_reads_the_same_pairs(tmp_path_factory: pytest.TempPathFactory, pairs: list) -> None:
    folder = tmp_path_factory.mktemp("formats")
    users, items = [u for u, _ in pairs], [i for _, i in pairs]
    expected = _frame(users, items)
    lines = "".join(f"{u},{i}\n" for u, i in pairs)
    expected.write_parquet(folder / "a.parquet")
    frames = {
        "csv": read_interactions(_write(folder, "a.csv", "user,item\n" + lines), "csv"),
        "tsv": read_interactions(_write(folder, "a.tsv", "user\titem\n" + lines.replace(",", "\t")), "tsv"),
        "parquet": read_interactions(folder / "a.parquet", "parquet"),
        # One line per pair: a user may appear on several lines, as in a concatenation of files.
        "lightgcn": read_interactions(_write(folder, "a.txt", lines.replace(",", " ")), "lightgcn"),
    }
    for frame in frames.values():
        assert_frame_equal(frame, expected)


# --- errors --------------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        read_interactions(tmp_path / "absent.csv", "csv")


def test_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unknown format 'xlsx'"):
        read_interactions(_write(tmp_path, "a.csv", "user,item\n1,2\n"), "xlsx")


BAD_VALUES = [
    # (format, text, reader kwargs, line of the bad value, expected message after "file:line: ")
    ("csv", "user,item\n1,2\n3,4\nfive,6\n", {}, 4, "user 'five' is not a non-negative integer"),
    ("csv", "user,item\n1,2\n3,-4\n", {}, 3, "item '-4' is not a non-negative integer"),
    ("csv", "user,item\n1,2.5\n", {}, 2, "item '2.5' is not a non-negative integer"),
    ("csv", "user,item,rating\n1,2,4\n1,3,good\n", {"columns": {"rating": "rating"}}, 3, "rating 'good'"),
    ("csv", "1,2\n3,x\n", {"has_header": False, "columns": {"user": "0", "item": "1"}}, 2, "item 'x'"),
    ("tsv", "user\titem\n1\t2\n1\t2\n\t3\n", {}, 4, "user None is not a non-negative integer"),
    ("recbole", "user_id:token\titem_id:token\n1\t2\n5\tq\n", {"columns": ML_COLUMNS}, 3, "item 'q'"),
    ("lightgcn", "0 1 2\n\n1 2 x\n", {}, 3, "item 'x' is not a non-negative integer"),
    ("lightgcn", "0 1\r\n-1 2\r\n", {}, 2, "user '-1' is not a non-negative integer"),
]


@pytest.mark.parametrize(("format", "text", "kwargs", "line", "message"), BAD_VALUES)
def test_bad_value_names_file_and_line(
    tmp_path: Path, format: str, text: str, kwargs: dict[str, Any], line: int, message: str
) -> None:
    path = _write(tmp_path, "data.txt", text)
    with pytest.raises(DataError, match=re.escape(f"{path}:{line}: {message}")):
        read_interactions(path, format, **kwargs)


def test_non_whole_float_id_in_parquet_names_its_row(tmp_path: Path) -> None:
    path = tmp_path / "a.parquet"
    pl.DataFrame({"user": [1.0, 2.0, 2.5], "item": [1, 2, 3]}).write_parquet(path)
    with pytest.raises(DataError, match=re.escape(f"{path}:3: user 2.5 is not a non-negative integer")):
        read_interactions(path, "parquet")


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        ({"user": "uid", "item": "iid"}, "no user column 'uid' (columns: user_id, item_id)"),
        ({"user": "user_id", "item": "iid"}, "no item column 'iid' (columns: user_id, item_id)"),
    ],
)
def test_missing_mapped_id_column(tmp_path: Path, columns: dict[str, str], message: str) -> None:
    path = _write(tmp_path, "a.csv", "user_id,item_id\n1,2\n")
    with pytest.raises(DataError, match=re.escape(message)):
        read_interactions(path, "csv", columns=columns)


@pytest.mark.parametrize(
    ("format", "text"),
    [
        ("lightgcn", ""),
        ("lightgcn", "\n\n"),
        ("lightgcn", "0\n1\n"),  # users, but no items
        ("csv", ""),
        ("csv", "user,item\n"),
        ("tsv", "user\titem\n"),
        ("recbole", "user_id:token\titem_id:token\n"),
    ],
    ids=["lightgcn-empty", "lightgcn-blank", "lightgcn-no-items", "csv-empty", "csv-header", "tsv-header",
         "recbole-header"],
)
def test_a_file_without_interactions_is_a_data_error(tmp_path: Path, format: str, text: str) -> None:
    path = _write(tmp_path, "data.txt", text)
    columns = ML_COLUMNS if format == "recbole" else None
    with pytest.raises(DataError, match=re.escape(str(path))):
        read_interactions(path, format, columns=columns)


def test_parquet_without_rows_or_not_parquet(tmp_path: Path) -> None:
    empty = tmp_path / "empty.parquet"
    pl.DataFrame({"user": [], "item": []}, schema={"user": pl.Int64, "item": pl.Int64}).write_parquet(empty)
    with pytest.raises(DataError, match="no interactions"):
        read_interactions(empty, "parquet")
    with pytest.raises(DataError, match="not a readable parquet file"):
        read_interactions(_write(tmp_path, "fake.parquet", "user,item\n1,2\n"), "parquet")


def test_lightgcn_binary_file(tmp_path: Path) -> None:
    path = tmp_path / "blob.txt"
    path.write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(DataError, match="not a text file"):
        read_interactions(path, "lightgcn")
