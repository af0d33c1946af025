"""Item-sequence session files (SR-GNN / GCE-GNN benchmarks): the reader, the validation hold-out of the
last training sessions, and the real files' counts (from each folder's SOURCE.md)."""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl
import pytest

from recsys.cli import main
from recsys.data.sessions import given_split, last_sessions, read_sequences, read_sessions
from recsys.errors import DataError

DATA_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data"


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


def test_each_line_is_a_session_in_file_order(tmp_path: Path) -> None:
    path = _write(tmp_path, "train.txt", "5 3 5\n\n 7  2\t9 \n4 1\n")
    frame = read_sequences(path)
    assert frame["session"].to_list() == [1, 1, 1, 3, 3, 3, 4, 4]  # line numbers (line 2 is blank)
    assert frame["item"].to_list() == [5, 3, 5, 7, 2, 9, 4, 1]
    assert frame["timestamp"].to_list() == [float(t) for t in range(8)]  # file order is time order
    assert read_sessions(path, "sequences").equals(frame)


@pytest.mark.parametrize(("text", "line", "message"), [
    ("1 2\n3 x 4\n", 2, "item 'x' is not a non-negative integer"),
    ("1 2\n3 4\n-5 6\n", 3, "item '-5' is not a non-negative integer"),
    ("1 2.5\n", 1, "item '2.5' is not a non-negative integer"),
])
def test_a_bad_item_names_file_and_line(tmp_path: Path, text: str, line: int, message: str) -> None:
    path = _write(tmp_path, "bad.txt", text)
    with pytest.raises(DataError, match=re.escape(f"{path}:{line}: {message}")):
        read_sequences(path)


def test_empty_file_is_an_error(tmp_path: Path) -> None:
    path = _write(tmp_path, "empty.txt", "\n\n")
    with pytest.raises(DataError, match=re.escape(f"{path}: no events in the file")):
        read_sequences(path)


def test_last_sessions_hold_out_the_sessions_that_end_last() -> None:
    # Session 2 ends last (t=9), then 4 (t=7), 1 (t=5), 3 (t=3).
    frame = pl.DataFrame({
        "session": [1, 1, 2, 2, 3, 3, 4, 4],
        "item": [1, 2, 3, 4, 5, 6, 7, 8],
        "timestamp": [0.0, 5.0, 1.0, 9.0, 2.0, 3.0, 6.0, 7.0],
    })
    early, late = last_sessions(frame, 0.5)
    assert sorted(late["session"].unique().to_list()) == [2, 4]
    assert sorted(early["session"].unique().to_list()) == [1, 3]
    assert last_sessions(frame, 0.01)[1]["session"].unique().to_list() == [2]  # at least one


def test_given_split_without_a_valid_file_validates_on_the_last_sessions(tmp_path: Path) -> None:
    train = read_sequences(_write(tmp_path, "train.txt", "".join(f"{i} {i + 1} {i + 2}\n" for i in range(1, 21))))
    test = read_sequences(_write(tmp_path, "test.txt", "3 4\n99 5 6\n"))
    split = given_split(train, test, valid_ratio=0.1)
    # The last 2 of 20 sessions validate; items 21 and 22 occur only there, so the item map is 1..20
    # and the last session ("20 21 22") keeps one event: too short to predict anything.
    assert (len(split.train), len(split.valid), len(split.test)) == (18, 1, 2)
    assert split.n_items == 20 and split.valid.n_events == 2
    assert split.test.n_events == 4  # item 99 was never trained on: dropped
    assert len(given_split(train, test).valid) == 0  # no ratio, no hold-out


def test_malformed_sequences_file_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "seqs"
    folder.mkdir()
    _write(folder, "train_sessions.txt", "1 2 3\n4 5 oops\n")
    _write(folder, "test_sessions.txt", "1 2\n")
    config = _write(tmp_path, "c.yaml", (
        "data: {name: seqs, format: sequences, train_file: train_sessions.txt, test_file: test_sessions.txt,"
        " split: {method: given, valid_ratio: 0.1}}\nmodel: {name: sasrec, dim: 8, layers: 1, heads: 1, max_len: 5}\n"
        "sampler: {name: uniform}\nloss: {name: bce}\n"
    ))
    code = main(["fit", "-c", str(config), "--data-root", str(tmp_path), "--tracking-uri",
                 f"sqlite:///{tmp_path}/m.db", "--no-progress"])
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(error) == 1
    assert error[0] == f"recsys: error: {folder / 'train_sessions.txt'}:2: item 'oops' is not a non-negative integer"
    assert not (tmp_path / "m.db").exists()


@pytest.mark.parametrize(("folder", "train", "test"), [
    ("yoochoose1_64-srgnn", (116_167, 486_026), (15_324, 71_222)),
    ("diginetica-srgnn", (186_670, 906_140), (15_963, 76_821)),
    ("tmall-gcegnn", (65_286, 416_554), (1_027, 26_925)),
])
def test_real_files_match_their_source_counts(folder: str, train: tuple[int, int], test: tuple[int, int]) -> None:
    if not (DATA_ROOT / folder).is_dir():
        pytest.skip(f"{DATA_ROOT / folder} not found (see shared/data/README.md)")
    for name, (sessions, clicks) in (("train_sessions.txt", train), ("test_sessions.txt", test)):
        frame = read_sequences(DATA_ROOT / folder / name)
        assert (frame["session"].n_unique(), frame.height) == (sessions, clicks)
