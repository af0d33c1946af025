"""`recsys bench speed`: the cost of training and evaluating, measured by the real `recsys fit`.

Each config runs in its own process (so peak RSS is that config's own) for a fixed number of epochs;
the figures are the run's logged metrics: ``time/epoch_train_s`` (median over epochs, and its range),
``time/eval_s`` (validation, median), ``time/test_eval_s`` (one full-ranking pass over every test
user), and the peak of ``sys/peak_rss_mb``. With a peers interpreter, the peers that mirror a config
(``recsys.bench.peers``) run on its exported split right after it, each row with the ratio of its
seconds per epoch to ours.

``--docs PAGE`` rewrites the part of a Markdown page between ``DOCS_BEGIN`` and ``DOCS_END`` with the
command and its tables, leaving the rest of the page as it is.
"""

from __future__ import annotations

import datetime
import os
import sys
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path

import torch

from recsys.bench.runs import FitFigures, machine_line, markdown_table, timed_fit
from recsys.errors import UserError

__all__ = ["DEFAULT_CONFIGS", "DEFAULT_PEER_DATASETS", "DOCS_BEGIN", "DOCS_END", "check_docs_page",
           "docs_section", "replace_docs_section", "run_speed_benchmark"]

DEFAULT_CONFIGS = tuple(f"configs/{dataset}/{model}.yaml" for dataset in ("ml-100k", "gowalla")
                        for model in ("mf_bpr", "lightgcn", "simplex"))
# RecBole needs minutes per Gowalla epoch on a small CPU: peers run there only when asked.
DEFAULT_PEER_DATASETS = ("ml-100k",)
DOCS_BEGIN = "<!-- bench speed: begin -->"
DOCS_END = "<!-- bench speed: end -->"

HEADER = ("config", "dataset", "train pairs", "test users x items", "epochs", "train s/epoch median (min-max)",
          "val eval s (median)", "test eval s", "peak RSS MiB", "s/epoch vs ours")


def run_speed_benchmark(
    configs: list[Path], epochs: int, data_root: Path, cache_dir: Path | None, overrides: list[str] | None = None,
    peers_python: Path | None = None, peer_datasets: Sequence[str] = DEFAULT_PEER_DATASETS,
) -> str:
    """Run every config (with ``overrides``) for ``epochs`` epochs, and its peers in ``peers_python`` on
    ``peer_datasets``; return a Markdown table of their costs with notes below it."""
    from recsys.bench.peers import check_interpreter, peer_row, peers_for, run_peer
    from recsys.config import load_config
    from recsys.data.export import export_recbole

    for config in configs:
        if not config.is_file():
            raise UserError(f"{config}: no such config file")
    if peers_python is not None:
        check_interpreter(peers_python)
    overrides = list(overrides or [])
    rows, notes = [], []
    with tempfile.TemporaryDirectory(prefix="recsys-peers-") as scratch:
        exports = {}  # (data config, seed) -> its export, shared by the configs of one split
        for config in configs:
            run = timed_fit(config, overrides, epochs, data_root, cache_dir)
            rows.append(_our_row(config, run))
            # Each row as soon as it is measured: a benchmark cut short still reports what it measured.
            print("bench: " + " | ".join(f"{name}: {value}" for name, value in zip(HEADER, rows[-1]) if value),
                  file=sys.stderr, flush=True)
            if peers_python is None:
                continue
            experiment = load_config(config, overrides)
            if experiment.data.name not in peer_datasets:
                continue
            for peer in peers_for(experiment):
                key = (experiment.data.model_dump_json(), experiment.seed)
                if key not in exports:
                    exports[key] = export_recbole(experiment.data, data_root, experiment.seed,
                                                  Path(scratch) / f"export-{len(exports)}", cache_dir)
                # The peers get the thread count our fits had (torch's default, or OMP_NUM_THREADS).
                result = run_peer(peers_python, peer, experiment, exports[key], epochs, torch.get_num_threads(),
                                  Path(scratch) / f"run-{uuid.uuid4().hex}")
                if isinstance(result, str):
                    notes.append(f"{peer.label}: not available in {peers_python} ({result}).")
                else:
                    rows.append(peer_row(peer, result, config, run.tags.get("dataset", "?"),
                                         run.median("time/epoch_train_s")))
    notes.append(_peers_line(peers_python, peer_datasets))
    applied = f"\n\nOverrides: `{' '.join(overrides)}`" if overrides else ""
    return (machine_line() + applied + "\n\n" + markdown_table(HEADER, rows) + "\n\n"
            + "\n".join(dict.fromkeys(notes)))


def _our_row(config: Path, run: FitFigures) -> tuple[str, ...]:
    train = run.history["time/epoch_train_s"]
    return (
        str(config),
        run.tags.get("dataset", "?"),
        *_sizes(run.tags),
        str(len(train)),
        f"{run.median('time/epoch_train_s'):.4f} ({min(train):.4f}-{max(train):.4f})",
        f"{run.median('time/eval_s'):.3f}",
        f"{run.history['time/test_eval_s'][-1]:.3f}",
        f"{max(run.history['sys/peak_rss_mb']):.0f}",
        "",
    )


def _peers_line(peers_python: Path | None, peer_datasets: Sequence[str]) -> str:
    if peers_python is None:
        return ("No peer rows: pass `--peers PYTHON` (or set RECSYS_PEERS_PYTHON), an interpreter with RecBole "
                "and implicit (the `peers` dependency group in pyproject.toml), for RecBole and implicit on the "
                "same split.")
    return (f"Peers run in `{peers_python}` on {', '.join(peer_datasets)}; *s/epoch vs ours* is a peer's median "
            "training seconds per epoch over ours for the config named in its row (implicit: its fit's seconds "
            "over its epochs).")


def _sizes(tags: dict[str, str]) -> tuple[str, str]:
    """Training size and the test ranking's shape, from a run's data tags (pairs and users, or events
    and sessions for session data)."""
    items = int(tags["data.n_items"])
    if "data.train_sessions" in tags:
        return f"{int(tags['data.train_events']):,} events", f"{int(tags['data.test_sessions']):,} sessions x {items:,}"
    return f"{int(tags['data.train_interactions']):,}", f"{int(tags['data.test_users']):,} x {items:,}"


def _marked_span(text: str, page: Path) -> tuple[int, int]:
    """Where the generated section of ``text`` starts (after ``DOCS_BEGIN``) and ends (at ``DOCS_END``).

    Raises:
        UserError: the markers are missing, repeated or out of order.
    """
    if text.count(DOCS_BEGIN) != 1 or text.count(DOCS_END) != 1 or text.index(DOCS_END) < text.index(DOCS_BEGIN):
        raise UserError(f"{page}: needs one line `{DOCS_BEGIN}` and, below it, one line `{DOCS_END}` around the "
                        "section that `recsys bench speed --docs` rewrites")
    return text.index(DOCS_BEGIN) + len(DOCS_BEGIN), text.index(DOCS_END)


def check_docs_page(page: Path) -> None:
    """Raise UserError unless ``page`` exists and has the markers (checked before a long benchmark)."""
    if not page.is_file():
        raise UserError(f"{page}: no such file")
    _marked_span(page.read_text(), page)


def docs_section(command: str, report: str) -> str:
    """The generated part of the docs page: the command, when it ran, and its report."""
    return f"```bash\n{command}\n```\n\nWritten by that command on {datetime.date.today().isoformat()}:\n\n{report}\n"


def replace_docs_section(page: Path, section: str) -> None:
    """Replace what lies between the markers of ``page`` with ``section``, atomically: the new page is
    written beside it and renamed over it, so a reader never sees half a page."""
    text = page.read_text()
    start, end = _marked_span(text, page)
    updated = text[:start] + "\n" + section.strip("\n") + "\n" + text[end:]
    staging = page.with_name(f".{page.name}.{uuid.uuid4().hex}.tmp")
    try:
        staging.write_text(updated)
        os.replace(staging, page)
    finally:
        staging.unlink(missing_ok=True)
