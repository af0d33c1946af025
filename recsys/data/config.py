"""The ``data`` config section: which files, how to read, filter and split them."""

from __future__ import annotations

from importlib import resources
from typing import Any, Literal

import yaml
from pydantic import Field, model_validator

from recsys.interfaces import Section

__all__ = ["SESSION_FORMATS", "ColumnsConfig", "DataConfig", "SplitConfig", "known_datasets", "with_manifest_defaults"]

SESSION_FORMATS = ("yoochoose", "diginetica", "otto", "sequences")


class ColumnsConfig(Section):
    """Our column name -> the file's column name (None: ignore it). Header names for csv/tsv/recbole;
    0-based positions as strings ("0", "1") for files without a header."""

    user: str = "user"
    item: str = "item"
    rating: str | None = "rating"
    timestamp: str | None = "timestamp"


class SplitConfig(Section):
    """How interactions become train / validation / test.

    - ``random``: per-user random ``ratios`` (RecBole's RS split grouped by user).
    - ``leave_one_out``: per user, last by time is test, second-to-last validation.
    - ``temporal``: one global time cut by ``ratios``.
    - ``given``: ``train_file`` / ``test_file`` as given; ``valid_ratio`` of each user's train is carved
      out as validation unless a ``valid_file`` is given (sessions: the ``valid_ratio`` of training
      sessions that end last).
    - ``last_days`` (sessions): TRON's preprocessing and split of one event ``file`` by each session's
      last event (``recsys.data.sessions.tron_split``), items kept from ``min_item_interactions``
      occurrences (TRON: 5).
    """

    method: Literal["random", "leave_one_out", "temporal", "given", "last_days"] = "random"
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
    valid_ratio: float = Field(0.1, gt=0.0, lt=1.0)
    seed: int | None = None  # None: the experiment's seed
    # last_days (session data, TRON's split): sessions ending in the last test_days days are test; with
    # valid_days, those ending in the last valid_days days of the rest are validation.
    test_days: float = Field(1.0, gt=0)
    valid_days: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _check_ratios(self) -> SplitConfig:
        if any(r < 0 for r in self.ratios) or self.ratios[0] <= 0 or sum(self.ratios) <= 0:
            raise ValueError("ratios must be non-negative with a positive train share")
        return self


class DataConfig(Section):
    """A dataset: a folder ``name`` under the data root, its format, files and preprocessing."""

    name: str
    # Interaction formats, then session formats (``SESSION_FORMATS``: event logs for session models).
    format: Literal[
        "lightgcn", "recbole", "csv", "tsv", "parquet", "dense", "yoochoose", "diginetica", "otto", "sequences"
    ]
    file: str | None = None
    train_file: str | None = None
    valid_file: str | None = None
    test_file: str | None = None
    columns: ColumnsConfig = ColumnsConfig()
    separator: str | None = None
    has_header: bool = True
    rating_threshold: float | None = None
    # The test file lists randomly exposed (user, item, rating) pairs (Yahoo! R3's random.txt, Coat's
    # test.ascii): all are kept as the split's `exposure`, and those rated >= rating_threshold are the
    # test positives. `eval.protocol: exposed` ranks each test user's exposed items only.
    exposed_test: bool = False
    min_user_interactions: int = Field(0, ge=0)
    min_item_interactions: int = Field(0, ge=0)
    split: SplitConfig = SplitConfig()

    @model_validator(mode="after")
    def _check_files(self) -> DataConfig:
        given = self.split.method == "given"
        if given and (self.train_file is None or self.test_file is None):
            raise ValueError("split.method 'given' needs train_file and test_file")
        if not given and self.file is None:
            raise ValueError(f"split.method {self.split.method!r} needs one interaction `file`")
        if not given and (self.train_file or self.test_file or self.valid_file):
            raise ValueError("train_file/valid_file/test_file are only for split.method 'given'")
        if given and (self.min_user_interactions > 1 or self.min_item_interactions > 1):
            raise ValueError("k-core filtering would change a given split; filter the files instead")
        if self.exposed_test and (not given or self.rating_threshold is None):
            raise ValueError("exposed_test needs split.method 'given' (the exposed test file) and a rating_threshold")
        if self.sessions and self.split.method not in ("given", "last_days"):
            raise ValueError(f"format {self.format!r} (sessions) needs split.method 'given' or 'last_days'")
        if self.split.method == "last_days" and not self.sessions:
            raise ValueError(f"split.method 'last_days' is for session formats ({', '.join(SESSION_FORMATS)})")
        return self

    @property
    def sessions(self) -> bool:
        """True for session event logs (``SESSION_FORMATS``), read into ``recsys.data.sessions``."""
        return self.format in SESSION_FORMATS


def known_datasets() -> dict[str, dict[str, Any]]:
    """The manifest: dataset name -> default ``data`` settings (``recsys/data/datasets.yaml``)."""
    text = resources.files("recsys.data").joinpath("datasets.yaml").read_text()
    return yaml.safe_load(text)


def with_manifest_defaults(data: dict[str, Any]) -> dict[str, Any]:
    """A raw ``data`` section over its manifest entry (the section's keys win, nested too)."""
    entry = known_datasets().get(data.get("name"), {})
    return _deep_merge(entry, data)


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged
