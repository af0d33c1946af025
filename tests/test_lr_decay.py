"""`train.lr_decay`: the learning rate cut on a validation plateau (FuxiCTR's reduce_lr_on_plateau), its
replay in a refit, and its resumption."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from mlflow.tracking import MlflowClient

from recsys.cli import main
from recsys.config import load_config
from recsys.models.lr_decay import PlateauDecay, ScheduledDecay
from tests.test_resume import QUICKSTART, REPO, _cli, _error, _fit, _history, _interrupted_then_resumed


def _trainer(lr: float) -> SimpleNamespace:
    """What the callbacks read of a Lightning trainer, around a real optimizer."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=lr)
    return SimpleNamespace(optimizers=[optimizer], sanity_checking=False, callback_metrics={}, current_epoch=0)


def _validate(decay: PlateauDecay, trainer: SimpleNamespace, values: list[float], start: int = 0) -> list[float]:
    """Validate each epoch from ``start`` on with the next value; the rate after each validation."""
    rates = []
    for epoch, value in enumerate(values, start):
        trainer.current_epoch, trainer.callback_metrics = epoch, {"val/ndcg@20": torch.tensor(value)}
        decay.on_validation_end(trainer, None)
        rates.append(trainer.optimizers[0].param_groups[0]["lr"])
    return rates


VALUES = [0.1, 0.2, 0.2, 0.15, 0.3, 0.1, 0.1, float("nan")]


def test_plateau_decay_cuts_after_each_validation_without_strict_improvement() -> None:
    trainer = _trainer(1.0)
    decay = PlateauDecay("val/ndcg@20", factor=0.1, patience=1, min_lr=1e-3)
    rates = _validate(decay, trainer, VALUES)
    # A tie (epoch 2) and NaN (epoch 7) do not improve; the floor holds from epoch 5 on.
    assert decay.cuts == [2, 3, 5, 6, 7]
    assert rates == pytest.approx([1.0, 1.0, 0.1, 0.01, 0.01, 1e-3, 1e-3, 1e-3])


def test_plateau_decay_waits_patience_validations_between_cuts() -> None:
    trainer = _trainer(1.0)
    decay = PlateauDecay("val/ndcg@20", factor=0.5, patience=2)
    rates = _validate(decay, trainer, VALUES)
    assert decay.cuts == [3, 6]
    assert rates == pytest.approx([1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25])


def test_plateau_decay_ignores_sanity_checks_and_resumes_from_its_state() -> None:
    trainer = _trainer(1.0)
    decay = PlateauDecay("val/ndcg@20", factor=0.1)
    trainer.sanity_checking, trainer.callback_metrics = True, {"val/ndcg@20": torch.tensor(0.0)}
    decay.on_validation_end(trainer, None)
    assert decay.best is None and trainer.optimizers[0].param_groups[0]["lr"] == 1.0
    trainer.sanity_checking = False
    _validate(decay, trainer, VALUES[:4])
    resumed = PlateauDecay("val/ndcg@20", factor=0.1)
    resumed.load_state_dict(decay.state_dict())
    assert (resumed.best, resumed.wait, resumed.cuts) == (pytest.approx(0.2), 0, [2, 3])
    _validate(resumed, _trainer(0.01), VALUES[4:], start=4)
    assert resumed.cuts == [2, 3, 5, 6, 7]  # as in one uninterrupted run


def test_scheduled_decay_cuts_at_the_start_of_the_epoch_after_each_cut() -> None:
    trainer = _trainer(1.0)
    decay = ScheduledDecay([2, 2, 5], factor=0.1, min_lr=1e-4)
    rates = []
    for epoch in range(8):
        trainer.current_epoch = epoch
        decay.on_train_epoch_start(trainer, None)
        rates.append(trainer.optimizers[0].param_groups[0]["lr"])
    assert rates == pytest.approx([1.0, 1.0, 1.0, 0.01, 0.01, 0.01, 1e-3, 1e-3])


def test_plateau_decay_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="factor"):
        PlateauDecay("val/ndcg@20", factor=1.0)
    with pytest.raises(ValueError, match="patience"):
        PlateauDecay("val/ndcg@20", factor=0.1, patience=0)


# lr 0.05 with early-stopping patience 3 plateaus on the sample within 14 epochs.
DECAYING = ["train.lr=0.05", "train.lr_decay=0.5", "train.max_epochs=14", "train.patience=3", "train.refit=true"]


def _expected_rates(validation: list[tuple[int, float]], lr: float, factor: float) -> tuple[list[int], list[float]]:
    """The cuts and per-epoch rates recomputed from the run's validation history (patience 1)."""
    cuts, best, rates = [], -math.inf, []
    for epoch, value in validation:
        rates.append(lr * factor ** len(cuts))
        if value > best:
            best = value
        else:
            cuts.append(epoch)
    return cuts, rates


def test_a_fit_cuts_on_its_plateaus_and_its_refit_makes_the_same_cuts(tmp_path: Path) -> None:
    config = load_config(QUICKSTART, DECAYING)
    result = _fit(config, REPO / "data", tmp_path)
    validation = _history(tmp_path, result.run_id, "val/ndcg_at_20")
    cuts, rates = _expected_rates(validation, 0.05, 0.5)
    assert cuts and result.lr_cuts == cuts  # the setting made mid-run cuts here
    assert [value for _, value in _history(tmp_path, result.run_id, "train/lr")] == pytest.approx(rates)
    run = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(result.run_id)
    assert run.data.tags["lr_cuts"] == ",".join(map(str, cuts))
    refit = _history(tmp_path, result.run_id, "refit/train/lr")
    assert len(refit) == result.best_epoch + 1
    assert [value for _, value in refit] == pytest.approx(rates[: len(refit)])


def test_a_refit_given_its_cuts_matches_the_refit_after_selection(tmp_path: Path) -> None:
    selected = _fit(load_config(QUICKSTART, DECAYING), REPO / "data", tmp_path)
    assert selected.lr_cuts and selected.best_epoch is not None
    epochs = selected.best_epoch + 1
    given = load_config(QUICKSTART, [*DECAYING[:-1], f"train.refit_epochs={epochs}",
                                     f"train.refit_lr_cuts=[{','.join(map(str, selected.lr_cuts))}]"])
    refitted = _fit(given, REPO / "data", tmp_path)
    assert refitted.lr_cuts == selected.lr_cuts and refitted.test == selected.test
    assert _history(tmp_path, refitted.run_id, "refit/train/lr") == _history(tmp_path, selected.run_id, "refit/train/lr")
    run = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(refitted.run_id)
    assert run.data.tags["lr_cuts"] == ",".join(map(str, selected.lr_cuts))


@pytest.mark.parametrize("prefix", ["", "refit/"])
def test_a_decaying_fit_resumes_with_the_same_rates(prefix: str, tmp_path: Path) -> None:
    config = load_config(QUICKSTART, DECAYING)
    straight = _fit(config, REPO / "data", tmp_path)
    resumed = _interrupted_then_resumed(config, REPO / "data", tmp_path, 8, prefix)
    assert resumed.test == straight.test and resumed.lr_cuts == straight.lr_cuts
    for key in ("train/lr", "refit/train/lr"):
        assert _history(tmp_path, resumed.run_id, key) == _history(tmp_path, straight.run_id, key)


def test_bad_lr_decay_settings_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(_cli(tmp_path, "train.lr_decay=1.5")) == 2
    assert "train.lr_decay" in _error(capsys)
    assert main(_cli(tmp_path, "train.lr_decay=0.1", "train.refit_epochs=3")) == 2
    assert "lr_decay" in _error(capsys)
    assert main(_cli(tmp_path, "train.refit_lr_cuts=[1]", "train.refit_epochs=3")) == 2
    assert "train.refit_lr_cuts" in _error(capsys)
    assert main(_cli(tmp_path, "train.lr_decay=0.1", "train.refit_lr_cuts=[-1]", "train.refit_epochs=3")) == 2
    assert "refit_lr_cuts" in _error(capsys)
