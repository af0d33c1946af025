"""`recsys data export NAME --format recbole`: the exported files hold exactly our split, fold by fold."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recsys.cli import main
from recsys.config import load_config
from recsys.data.config import DataConfig, with_manifest_defaults
from recsys.data.interactions import Interactions
from recsys.data.loading import load_split

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "configs" / "quickstart.yaml"
FOLDS = ("train", "valid", "test")


def _read_back(path: Path) -> pl.DataFrame:
    return pl.read_csv(path, separator="\t", infer_schema_length=None)


def _pairs_list(part: Interactions) -> list[tuple[int, int]]:
    """Each interaction as its original (user, item) ids."""
    return list(zip(part.user_ids.to_numpy()[part.users].tolist(), part.item_ids.to_numpy()[part.items].tolist()))


def _pairs(part: Interactions) -> set[tuple[int, int]]:
    return set(_pairs_list(part))


def _check_export(folder: Path, name: str, split, columns: list[str]) -> None:
    for fold in FOLDS:
        part = getattr(split, fold)
        frame = _read_back(folder / f"{name}.{fold}.inter")
        assert frame.columns == columns
        exported = set(zip(frame["user_id:token"].to_list(), frame["item_id:token"].to_list()))
        assert frame.height == len(part) == len(exported)  # no pair lost, added or repeated
        assert exported == _pairs(part), fold
        keys = list(zip(frame["user_id:token"].to_list(), frame["item_id:token"].to_list()))
        for column, values in (("rating:float", part.ratings), ("timestamp:float", part.timestamps)):
            if column in columns:  # the same value on each pair
                assert dict(zip(keys, frame[column].to_list())) == dict(zip(_pairs_list(part), values.tolist()))


def test_sample_export_holds_exactly_our_split(tmp_path: Path, capsys) -> None:
    out, cache = tmp_path / "exports", tmp_path / "cache"
    args = ["data", "export", "-c", str(QUICKSTART), "--format", "recbole", "--out", str(out),
            "--data-root", str(REPO / "data"), "--cache-dir", str(cache)]
    assert main(args) == 0
    stdout = capsys.readouterr().out
    config = load_config(QUICKSTART)
    split = load_split(config.data, REPO / "data", config.seed, cache)
    folder = out / "sample"
    columns = ["user_id:token", "item_id:token", "rating:float", "timestamp:float"]
    _check_export(folder, "sample", split, columns)
    assert sorted(p.name for p in folder.iterdir()) == [
        "recbole.yaml", "sample.test.inter", "sample.train.inter", "sample.valid.inter"]
    # The folds partition the data: no pair is in two of them.
    folds = [_pairs(getattr(split, fold)) for fold in FOLDS]
    assert sum(map(len, folds)) == len(set().union(*folds))
    # How to run it in RecBole, on stdout and in recbole.yaml.
    assert "benchmark_filename: [train, valid, test]" in stdout
    assert f"data_path: {out.resolve()}" in stdout
    assert "inter: [user_id, item_id, rating, timestamp]" in stdout
    assert "--dataset=sample" in stdout
    assert (folder / "recbole.yaml").read_text() in stdout
    assert f"({len(split.train)} train, {len(split.valid)} valid, {len(split.test)} test interactions)" in stdout


def test_another_seed_exports_another_split_into_the_same_folder(tmp_path: Path) -> None:
    out, cache = tmp_path / "exports", tmp_path / "cache"
    base = ["data", "export", "sample", "--format", "recbole", "--out", str(out), "--data-root", str(REPO / "data"),
            "--cache-dir", str(cache)]
    assert main(base) == 0
    (out / "sample" / "sample.item").write_text("item_id:token\n")  # a feature file of the user's: kept
    assert main([*base, "--seed", "7"]) == 0
    config = load_config(QUICKSTART)
    split = load_split(config.data, REPO / "data", 7, cache)
    _check_export(out / "sample", "sample", split,
                  ["user_id:token", "item_id:token", "rating:float", "timestamp:float"])
    assert (out / "sample" / "sample.item").exists()
    assert [p.name for p in out.iterdir()] == ["sample"]  # no staging folder left


def test_hand_made_csv_export_keeps_original_ids(tmp_path: Path, capsys) -> None:
    """Sparse, large original ids, a rating column and no timestamps, a duplicate row."""
    rng = np.random.default_rng(0)
    rows = {(1000 + 17 * user, 500_000 + 3 * item) for user in range(12) for item in rng.choice(40, 9, replace=False)}
    lines = ["customer,product,stars"] + [f"{u},{i},{(u + i) % 5 + 1}" for u, i in sorted(rows)]
    lines.append(lines[1])  # the same pair twice: one interaction
    (tmp_path / "data" / "shop").mkdir(parents=True)
    (tmp_path / "data" / "shop" / "events.csv").write_text("\n".join(lines) + "\n")
    config_path = tmp_path / "shop.yaml"
    config_path.write_text(
        "seed: 3\n"
        "data:\n"
        "  name: shop\n  format: csv\n  file: events.csv\n"
        "  columns: {user: customer, item: product, rating: stars, timestamp: null}\n"
        "  split: {method: random, ratios: [0.6, 0.2, 0.2]}\n"
        "model: {name: mf}\n"
    )
    out, cache = tmp_path / "out", tmp_path / "cache"
    assert main(["data", "export", "-c", str(config_path), "--format", "recbole", "--out", str(out),
                 "--data-root", str(tmp_path / "data"), "--cache-dir", str(cache)]) == 0
    assert "inter: [user_id, item_id, rating]" in capsys.readouterr().out
    config = load_config(config_path)
    split = load_split(config.data, tmp_path / "data", config.seed, cache)
    _check_export(out / "shop", "shop", split, ["user_id:token", "item_id:token", "rating:float"])
    exported = set()
    for fold in FOLDS:
        frame = _read_back(out / "shop" / f"shop.{fold}.inter")
        exported |= set(zip(frame["user_id:token"].to_list(), frame["item_id:token"].to_list()))
    assert exported == rows  # every original pair, by its original ids, once


def test_session_data_and_missing_name_are_exit_2(tmp_path: Path, capsys) -> None:
    assert main(["data", "export", "yoochoose", "--format", "recbole", "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert "interaction data only" in error and len(error.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
    assert main(["data", "export", "--format", "recbole"]) == 2
    assert "give a dataset NAME or -c CONFIG" in capsys.readouterr().err


def test_format_is_required(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "export", "sample"])
    assert exit_info.value.code == 2
    assert "--format" in capsys.readouterr().err


def test_ml100k_is_exported_under_a_name_recbole_reads_from_data_path(tmp_path: Path, capsys) -> None:
    """RecBole 1.2.1 reads a dataset named ml-100k from its bundled example whatever data_path says, so
    ours goes to ml-100k-recsys (checked by hand: RecBole loads it as exactly these three folds)."""
    shared = REPO.parent / "shared" / "data"
    if not (shared / "ml-100k" / "ml-100k.inter").is_file():
        pytest.skip("../shared/data/ml-100k missing")
    out, cache = tmp_path / "exports", tmp_path / "cache"
    assert main(["data", "export", "ml-100k", "--format", "recbole", "--out", str(out), "--data-root", str(shared),
                 "--cache-dir", str(cache)]) == 0
    stdout = capsys.readouterr().out
    assert "--dataset=ml-100k-recsys" in stdout and [p.name for p in out.iterdir()] == ["ml-100k-recsys"]
    split = load_split(DataConfig.model_validate(with_manifest_defaults({"name": "ml-100k"})), shared, 2020, cache)
    _check_export(out / "ml-100k-recsys", "ml-100k-recsys", split,
                  ["user_id:token", "item_id:token", "rating:float", "timestamp:float"])
