"""`recsys bench speed` runs real fits in subprocesses and reads their costs back from MLflow; `--docs`
rewrites the marked section of a page with them."""

from __future__ import annotations

from pathlib import Path

import pytest

from recsys.bench.speed import DOCS_BEGIN, DOCS_END, HEADER, replace_docs_section
from recsys.cli import main
from recsys.errors import UserError

REPO = Path(__file__).resolve().parents[1]
PAGE = f"# Benchmarks\n\nProse before.\n\n{DOCS_BEGIN}\nold table\n{DOCS_END}\n\nProse after.\n"


def test_bench_speed_times_a_config_with_overrides(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("RECSYS_PEERS_PYTHON", raising=False)  # no peers: they have their own test
    out, page = tmp_path / "speed.md", tmp_path / "benchmarks.md"
    page.write_text(PAGE)
    config = REPO / "configs" / "quickstart.yaml"
    code = main([
        "bench", "speed", "--configs", str(config), "--epochs", "2", "--data-root", str(REPO / "data"),
        "--cache-dir", str(tmp_path / "cache"), "--out", str(out), "--docs", str(page),
        "model.dim=8", "sampler.n_negatives=2",
    ])
    assert code == 0
    report = out.read_text()
    assert "Overrides: `model.dim=8 sampler.n_negatives=2`" in report
    (row,) = [line for line in report.splitlines() if line.startswith(f"| {config} |")]
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert len(cells) == len(HEADER)
    assert cells[1] == "sample" and cells[4] == "2"  # dataset, epochs
    assert float(cells[5].split()[0]) > 0  # train s/epoch median
    assert cells[-1] == ""  # no ratio on our own rows
    assert "No peer rows: pass `--peers PYTHON`" in report
    printed = capsys.readouterr()
    assert report in printed.out + "\n"
    # The row was printed as soon as it was measured (stderr), before the table.
    assert f"bench: config: {config} | dataset: sample | " in printed.err
    assert f"train s/epoch median (min-max): {cells[5]}" in printed.err
    # The page: the same prose around the markers, the command and the report between them.
    text = page.read_text()
    before, rest = text.split(DOCS_BEGIN)
    section, after = rest.split(DOCS_END)
    assert before == "# Benchmarks\n\nProse before.\n\n" and after == "\n\nProse after.\n"
    assert "old table" not in section and report.strip() in section
    command = (f"recsys bench speed --configs {config} --epochs 2 --data-root {REPO / 'data'} --cache-dir "
               f"{tmp_path / 'cache'} --out {out} --docs {page} model.dim=8 sampler.n_negatives=2")
    assert f"```bash\n{command}\n```" in section


def test_bench_speed_names_a_missing_config(tmp_path: Path, capsys) -> None:
    code = main(["bench", "speed", "--configs", str(tmp_path / "nope.yaml"), "--data-root", str(REPO / "data")])
    assert code == 2
    assert "nope.yaml: no such config file" in capsys.readouterr().err


@pytest.mark.parametrize("text", ["# no markers\n", f"{DOCS_END}\n{DOCS_BEGIN}\n", f"{DOCS_BEGIN}\n{DOCS_BEGIN}\n{DOCS_END}\n"])
def test_a_docs_page_without_its_markers_is_one_line_and_exit_2_before_any_run(
        tmp_path: Path, capsys, text: str) -> None:
    page = tmp_path / "benchmarks.md"
    page.write_text(text)
    code = main(["bench", "speed", "--configs", str(REPO / "configs" / "quickstart.yaml"), "--docs", str(page),
                 "--data-root", str(REPO / "data"), "--cache-dir", str(tmp_path / "cache")])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err.count("\n") == 1 and f"{page}: needs one line `{DOCS_BEGIN}`" in captured.err
    assert "bench:" not in captured.err and captured.out == ""  # nothing was run
    assert page.read_text() == text


def test_a_missing_peers_interpreter_is_one_line_and_exit_2(tmp_path: Path, capsys) -> None:
    code = main(["bench", "speed", "--configs", str(REPO / "configs" / "quickstart.yaml"), "--peers",
                 str(tmp_path / "nope" / "python"), "--data-root", str(REPO / "data")])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err.count("\n") == 1 and "nope/python: no such Python interpreter" in captured.err


def test_replacing_the_docs_section_renames_a_whole_new_page_over_the_old(tmp_path: Path) -> None:
    page = tmp_path / "benchmarks.md"
    page.write_text(PAGE)
    inode = page.stat().st_ino
    replace_docs_section(page, "\nnew table\n\n")
    assert page.read_text() == PAGE.replace("old table", "new table")
    assert page.stat().st_ino != inode  # os.replace of a new file, not a rewrite in place
    assert [path.name for path in tmp_path.iterdir()] == ["benchmarks.md"]  # no staging file left
    replace_docs_section(page, "newer table")
    assert page.read_text() == PAGE.replace("old table", "newer table")
    page.write_text("# the markers are gone\n")
    with pytest.raises(UserError, match="needs one line"):
        replace_docs_section(page, "table")
