"""The ``recsys`` command line (DESIGN.md, "The command line").

Exit codes: 0 ok; 2 a user's mistake (one line on stderr naming the file/key and the reason); 1 anything
else. Heavy libraries (torch, Lightning, MLflow) are imported only by the commands that need them.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from recsys.allocator import tune_malloc
from recsys.errors import DataError, UserError
from recsys.interrupts import raise_interrupt

__all__ = ["main"]

DEFAULT_TRACKING_URI = "sqlite:///tracking/mlflow.db"
DEFAULT_OPTUNA_STORAGE = "sqlite:///tracking/optuna.db"


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line on stderr and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-root",
        type=Path,
        default=Path(os.environ.get("RECSYS_DATA", "data")),
        help="folder with one folder per dataset (env RECSYS_DATA, default ./data)",
    )
    parser.add_argument(
        "--tracking-uri",
        default=os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_TRACKING_URI),
        help=f"MLflow tracking URI (env MLFLOW_TRACKING_URI, default {DEFAULT_TRACKING_URI})",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="split cache (env RECSYS_CACHE, default ~/.cache/recsys)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="recsys", description="Which negatives, with which loss, make which recommender best.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    fit = commands.add_parser("fit", help="train, validate each epoch, test the best checkpoint, track one run")
    fit.add_argument("-c", "--config", type=Path, required=True)
    fit.add_argument("overrides", nargs="*", metavar="dotted.key=value")
    fit.add_argument("--no-progress", action="store_true", help="no progress bar")
    fit.add_argument("--state-dir", type=Path, default=None,
                     help="keep a checkpoint of every epoch in this folder; the same command again continues "
                          "an interrupted fit from its last epoch, in the same MLflow run")
    _common(fit)
    fit.set_defaults(handler=_fit)

    evaluate = commands.add_parser("evaluate", help="offline evaluation of a saved checkpoint")
    evaluate.add_argument("-c", "--config", type=Path, required=True)
    evaluate.add_argument("--checkpoint", type=Path, required=True)
    evaluate.add_argument("overrides", nargs="*", metavar="dotted.key=value")
    evaluate.add_argument("--no-progress", action="store_true")
    _common(evaluate)
    evaluate.set_defaults(handler=_evaluate)

    tune = commands.add_parser("tune", help="an Optuna search over a config: pruned, resumable, tracked")
    tune.add_argument("-c", "--config", type=Path, required=True)
    tune.add_argument("--space", type=Path, required=True, help="search space YAML (configs/search/...)")
    tune.add_argument("--trials", type=int, required=True, help="finished (complete or pruned) trials to reach")
    tune.add_argument("--storage", default=os.environ.get("RECSYS_OPTUNA_STORAGE", DEFAULT_OPTUNA_STORAGE),
                      help=f"Optuna storage URL (env RECSYS_OPTUNA_STORAGE, default {DEFAULT_OPTUNA_STORAGE}; "
                           "postgresql://... for workers on many machines)")
    tune.add_argument("--study", default=None, help="study name (default: CONFIG-SPACE file stems)")
    tune.add_argument("--workers", type=int, default=1, help="worker processes on this machine")
    tune.add_argument("--timeout", type=float, default=None, help="stop starting trials after this many seconds")
    tune.add_argument("--resume", action="store_true", help="continue an existing study (an error if there is none)")
    tune.add_argument("--pruner", choices=["median", "hyperband", "none"], default=None,
                      help="override the space file's pruner")
    tune.add_argument("--search-sampler", choices=["tpe", "random", "grid"], default=None,
                      help="override the space file's search sampler")
    tune.add_argument("--out", type=Path, default=None,
                      help="where to write the best trial's config (default tracking/studies/STUDY-best.yaml)")
    tune.add_argument("--seed-offset", type=int, default=0,
                      help="added to the search sampler's seed: give each hand-started worker its own")
    tune.add_argument("--no-summary", action="store_true", help=argparse.SUPPRESS)
    tune.add_argument("overrides", nargs="*", metavar="dotted.key=value")
    _common(tune)
    tune.set_defaults(handler=_tune)

    data = commands.add_parser("data", help="dataset statistics and cached splits")
    data_commands = data.add_subparsers(dest="data_command", required=True, parser_class=_Parser)
    for name, text in (("info", "users, items, interactions and density per split"),
                       ("prepare", "build and cache the split")):
        sub = data_commands.add_parser(name, help=text)
        sub.add_argument("name", nargs="?", help="dataset folder name (see recsys/data/datasets.yaml)")
        sub.add_argument("-c", "--config", type=Path, help="take the data section of this config instead")
        sub.add_argument("--seed", type=int, default=None, help="split seed (default: the config's, or 2020)")
        _common(sub)
        sub.set_defaults(handler=_data)
    fetch = data_commands.add_parser("fetch", help="download a public dataset, verify its sha256, extract it safely")
    fetch.add_argument("name", help="a dataset of data/manifest.yaml")
    fetch.add_argument("--force", action="store_true", help="download again, replacing files already there")
    fetch.add_argument("--manifest", type=Path, default=None, help=argparse.SUPPRESS)
    _common(fetch)
    fetch.set_defaults(handler=_data_fetch)
    synth = data_commands.add_parser("synth", help="semi-synthetic MNAR clicks with known relevance (a dataset folder)")
    synth.add_argument("name", help="dataset folder to write under --data-root")
    synth.add_argument("--eta", type=float, default=1.0, help="popularity bias of exposure (0: none; default 1)")
    synth.add_argument("--users", type=int, default=2000)
    synth.add_argument("--items", type=int, default=1000)
    synth.add_argument("--dim", type=int, default=8, help="rank of the true relevance model")
    synth.add_argument("--clicks-per-user", type=float, default=30.0)
    synth.add_argument("--test-per-user", type=int, default=50, help="randomly exposed test items per user")
    synth.add_argument("--relevance-rate", type=float, default=0.1, help="mean true relevance")
    synth.add_argument("--test-labels", choices=["draw", "top"], default="draw",
                       help="test label: a Bernoulli draw of the true relevance (default), or top: the user's "
                       "relevance-rate fraction of items with the highest true relevance")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--force", action="store_true", help="replace an existing folder")
    _common(synth)
    synth.set_defaults(handler=_data_synth)
    export = data_commands.add_parser("export", help="write the cached split as RecBole atomic files")
    export.add_argument("name", nargs="?", help="dataset folder name (see recsys/data/datasets.yaml)")
    export.add_argument("--format", choices=["recbole"], required=True, help="recbole: benchmark_filename files")
    export.add_argument("--out", type=Path, default=Path("exports"), help="output folder (default ./exports)")
    export.add_argument("-c", "--config", type=Path, help="take the data section of this config instead")
    export.add_argument("--seed", type=int, default=None, help="split seed (default: the config's, or 2020)")
    _common(export)
    export.set_defaults(handler=_data_export)

    ui = commands.add_parser("ui", help="the MLflow UI on the tracking store (or optuna-dashboard), on 127.0.0.1")
    ui.add_argument("--port", type=int, default=None, help="default 5000 (MLflow), 8080 (--optuna)")
    ui.add_argument("--optuna", action="store_true", help="optuna-dashboard on the study storage instead")
    ui.add_argument("--storage", default=os.environ.get("RECSYS_OPTUNA_STORAGE", DEFAULT_OPTUNA_STORAGE),
                    help=f"Optuna storage URL for --optuna (env RECSYS_OPTUNA_STORAGE, default {DEFAULT_OPTUNA_STORAGE})")
    _common(ui)
    ui.set_defaults(handler=_ui)

    curves = commands.add_parser("curves", help="per-epoch curves of tracked runs: a summary, a PNG, a CSV")
    curves.add_argument("runs", nargs="+", metavar="RUN_ID", help="MLflow run ids (as `recsys fit` prints them)")
    curves.add_argument("--metric", action="append", default=[], metavar="KEY",
                        help="a per-epoch metric, e.g. val/recall@20, refit/test/ndcg@20, train/loss (repeatable; "
                             "default: each run's train.monitor and its refit test curve)")
    curves.add_argument("--out", type=Path, default=Path("curves.png"), help="the PNG (default ./curves.png)")
    curves.add_argument("--csv", type=Path, default=None, help="also write every point here (long format)")
    curves.add_argument("--reference", action="append", default=[], metavar="METRIC=VALUE",
                        help="a dashed horizontal line on that metric's panel, e.g. refit/test/recall@20=0.1830 "
                             "(repeatable)")
    curves.add_argument("--reference-label", default="reference", help="the legend's name for those lines")
    curves.add_argument("--title", default="", help="the figure's title")
    _common(curves)
    curves.set_defaults(handler=_curves)

    bench = commands.add_parser("bench", help="benchmarks: a grid of configs x seeds (-c GRID.yaml), speed, samplers")
    bench.add_argument("-c", "--config", type=Path, default=None,
                       help="grid file (configs/bench/...): configs x seeds -> table with CIs, tests, plots")
    bench.add_argument("--out", type=Path, default=None, help="where the grid's outputs go "
                       "(default tracking/bench/GRID-STEM/)")
    _common(bench)
    bench.set_defaults(handler=_bench_grid)
    bench_commands = bench.add_subparsers(dest="bench_command", required=False, parser_class=_Parser)
    speed = bench_commands.add_parser(
        "speed", help="seconds/epoch, evaluation seconds, peak RSS of every model, and of RecBole and implicit")
    speed.add_argument("--configs", type=Path, nargs="+", default=None,
                       help="configs to time (default: MF-BPR, LightGCN and SimpleX on ml-100k and gowalla)")
    speed.add_argument("--epochs", type=int, default=10, help="epochs per config (median reported)")
    speed.add_argument("--out", type=Path, default=None, help="also write the Markdown table here")
    speed.add_argument("--docs", type=Path, default=None,
                       help="rewrite the section of this page between <!-- bench speed: begin --> and "
                       "<!-- bench speed: end --> with the command and its tables (docs/benchmarks.md)")
    speed.add_argument("--peers", type=Path, default=os.environ.get("RECSYS_PEERS_PYTHON") or None,
                       metavar="PYTHON", help="Python with RecBole and/or implicit (the `peers` dependency group, e.g. "
                       ".venv-peers/bin/python; env RECSYS_PEERS_PYTHON): run them too, as ratios to ours")
    speed.add_argument("--peer-datasets", nargs="+", default=None, metavar="NAME",
                       help="datasets on which peers run (default: ml-100k; RecBole is slow on gowalla)")
    speed.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides for every config")
    _common(speed)
    speed.set_defaults(handler=_bench_speed)
    samplers = bench_commands.add_parser("samplers", help="sampler throughput and the step cost of each sampler")
    samplers.add_argument("--configs", type=Path, nargs="+", default=None,
                          help="MF configs to run each sampler on (default: the ml-100k and gowalla MF-BPR configs)")
    samplers.add_argument("--epochs", type=int, default=5, help="epochs per sampler (median reported)")
    samplers.add_argument("--out", type=Path, default=None, help="also write the Markdown here")
    _common(samplers)
    samplers.set_defaults(handler=_bench_samplers)
    return parser


def _fit(args: argparse.Namespace) -> int:
    from recsys.config import load_config
    from recsys.experiment import fit
    from recsys.report import results_table

    config = load_config(args.config, args.overrides)
    result = fit(config, args.data_root, args.tracking_uri, args.cache_dir, progress=not args.no_progress,
                 state_dir=args.state_dir)
    if not result.run_id:  # a DDP process other than rank zero: rank zero reports
        return 0
    print(results_table(result))
    print(f"MLflow run {result.run_id} in {args.tracking_uri} (experiment {config.tracking.experiment!r})")
    if result.checkpoint is not None:
        print(f"{'refitted model' if result.refit_epochs is not None else 'best checkpoint'}: {result.checkpoint}")
    return 0


def _tune(args: argparse.Namespace) -> int:
    from recsys.tuning.study import tune

    if args.trials < 1 or args.workers < 1:
        raise UserError("--trials and --workers must be at least 1")
    study = args.study or f"{args.config.stem}-{args.space.stem}"
    result = tune(
        args.config, args.overrides, args.space, args.trials, storage=args.storage, study_name=study,
        data_root=args.data_root, tracking_uri=args.tracking_uri, cache_dir=args.cache_dir, timeout=args.timeout,
        workers=args.workers, seed_offset=args.seed_offset, out=args.out, summary=not args.no_summary,
        resume=args.resume, pruner=args.pruner, search_sampler=args.search_sampler,
    )
    if args.no_summary:
        return 0
    print(f"study {result.study!r} in {args.storage}: {result.finished} complete, {result.pruned} pruned trials")
    if result.best_value is not None:
        print(f"best value {result.best_value:.4f} with {result.best_params}")
        print(f"best config: {result.best_config}  (recsys fit -c {result.best_config} reproduces it)")
    print(f"MLflow study run {result.parent_run_id} in {args.tracking_uri}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from recsys.config import load_config
    from recsys.experiment import evaluate
    from recsys.report import results_table

    config = load_config(args.config, args.overrides)
    result = evaluate(config, args.checkpoint, args.data_root, args.tracking_uri, args.cache_dir,
                      progress=not args.no_progress)
    print(results_table(result))
    print(f"MLflow run {result.run_id} in {args.tracking_uri}")
    return 0


def _data(args: argparse.Namespace) -> int:
    from recsys.data.loading import load_split
    from recsys.report import split_table

    data, seed = _data_section(args)
    if data.sessions:
        from recsys.data.loading import load_session_split
        from recsys.report import session_table

        sessions = load_session_split(data, args.data_root)
        print(session_table(data, sessions) if args.data_command == "info" else f"{data.name}: session files read (not cached)")
        return 0
    split = load_split(data, args.data_root, seed, args.cache_dir)
    if args.data_command == "info":
        print(split_table(data, split, seed))
    else:
        print(f"{data.name}: split cached ({len(split.train)} train, {len(split.valid)} valid, "
              f"{len(split.test)} test interactions)")
    return 0


def _data_section(args: argparse.Namespace):
    """The ``data`` section and seed of ``recsys data info|prepare|export``: from ``-c CONFIG``, or the
    defaults of dataset NAME (seed 2020); ``--seed`` wins."""
    from recsys.data.config import DataConfig, known_datasets, with_manifest_defaults

    if args.config is not None:
        from recsys.config import load_config

        config = load_config(args.config)
        data, seed = config.data, config.seed
    elif args.name:
        if args.name not in known_datasets():
            raise UserError(
                f"unknown dataset {args.name!r} (known: {', '.join(known_datasets())}); "
                "for another one pass -c CONFIG with a data section"
            )
        data, seed = DataConfig.model_validate(with_manifest_defaults({"name": args.name})), 2020
    else:
        raise UserError(f"recsys data {args.data_command}: give a dataset NAME or -c CONFIG")
    return data, args.seed if args.seed is not None else seed


def _data_fetch(args: argparse.Namespace) -> int:
    from recsys.data.fetch import fetch

    report = fetch(args.name, args.data_root, force=args.force, manifest=args.manifest)
    if not report.downloaded:
        print(f"{args.name}: already fetched and verified in {report.folder} ({len(report.kept)} files; "
              "nothing downloaded, --force downloads again)")
        return 0
    pinned = sum(pinned for _, _, pinned in report.downloaded)
    print(f"{args.name}: {len(report.downloaded)} downloads ({pinned} sha256-verified, "
          f"{len(report.downloaded) - pinned} unpinned) into {report.folder}"
          + (f"; {len(report.kept)} files were already there and verified" if report.kept else ""))
    return 0


def _data_synth(args: argparse.Namespace) -> int:
    from recsys.data.synth import SynthConfig, write_dataset

    config = SynthConfig(
        n_users=args.users, n_items=args.items, dim=args.dim, eta=args.eta, clicks_per_user=args.clicks_per_user,
        test_per_user=args.test_per_user, relevance_rate=args.relevance_rate, test_labels=args.test_labels,
        seed=args.seed,
    )
    folder = args.data_root / args.name
    data = write_dataset(config, folder, force=args.force)
    print(f"{args.name}: {data.train.height:,} clicks of {config.n_users:,} users on {config.n_items:,} items "
          f"(eta {config.eta:g}), {data.test.height:,} randomly exposed test pairs, in {folder}")
    print(f"train on it with data.name={args.name} and a configs/synth/ config")
    return 0


def _data_export(args: argparse.Namespace) -> int:
    from recsys.data.export import export_recbole

    data, seed = _data_section(args)
    result = export_recbole(data, args.data_root, seed, args.out, args.cache_dir)
    print(result.summary())
    print(result.recbole_config)
    return 0


def _ui(args: argparse.Namespace) -> int:
    from recsys.tracking.run import local_store_path

    if args.optuna:
        store = local_store_path(args.storage)
        if store is not None and not store.is_file():
            raise DataError(f"{store}: no study storage yet (run `recsys tune` first, or pass --storage)")
        port = args.port or 8080
        command = [sys.executable, "-c", "from optuna_dashboard._cli import main; main()", args.storage,
                   "--host", "127.0.0.1", "--port", str(port)]
        environment = dict(os.environ)
        print(f"optuna-dashboard on http://127.0.0.1:{port} for {args.storage} (Ctrl-C stops it)")
    else:
        store = local_store_path(args.tracking_uri)
        if store is not None and not store.is_file():
            raise DataError(f"{store}: no tracking store yet (run `recsys fit` first, or pass --tracking-uri)")
        port = args.port or 5000
        command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", args.tracking_uri,
                   "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
        # Browsing runs needs no job runner (MLflow 3 would start seven more processes for it).
        environment = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        print(f"MLflow UI on http://127.0.0.1:{port} for {args.tracking_uri} (Ctrl-C stops it)")
    # Its own session, so that stopping `recsys ui` (Ctrl-C, SIGTERM) stops every server process.
    server = subprocess.Popen(command, env=environment, start_new_session=True)
    try:
        return server.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        _stop_group(server)


def _curves(args: argparse.Namespace) -> int:
    from recsys.tracking.curves import draw_curves, read_curves, summary_table, write_csv

    references = {}
    for text in args.reference:
        metric, _, value = text.rpartition("=")
        try:
            references[metric] = float(value)
        except ValueError:
            raise UserError(f"--reference {text!r}: expected METRIC=NUMBER") from None
        if not metric:
            raise UserError(f"--reference {text!r}: expected METRIC=NUMBER")
    for path in (args.out, args.csv):
        if path is not None and path.is_dir():
            raise UserError(f"{path}: is a folder; name the file to write")
    curves = read_curves(args.tracking_uri, args.runs, args.metric)
    draw_curves(args.out, curves, references, args.reference_label, args.title)
    print(summary_table(curves))
    print(f"curves: {args.out}")
    if args.csv is not None:
        write_csv(args.csv, curves)
        print(f"points: {args.csv}")
    return 0


def _stop_group(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _bench_grid(args: argparse.Namespace) -> int:
    from recsys.bench.grid import run_grid

    if args.config is None:
        raise UserError("recsys bench: give -c GRID.yaml, or a subcommand (speed, samplers)")
    out = args.out or Path("tracking") / "bench" / args.config.stem
    outcome = run_grid(args.config, out, args.data_root, args.tracking_uri, args.cache_dir)
    print(outcome.markdown)
    print(f"\nwritten to {out}/: {', '.join(path.name for path in outcome.files)}")
    if outcome.failed:
        print(f"recsys: {len(outcome.failed)} cells failed ({'; '.join(outcome.failed)}); "
              "run the same command again to retry them", file=sys.stderr)
        return 1
    return 0


def _bench_speed(args: argparse.Namespace) -> int:
    from recsys.bench.speed import (
        DEFAULT_CONFIGS, DEFAULT_PEER_DATASETS, check_docs_page, docs_section, replace_docs_section,
        run_speed_benchmark,
    )

    if args.docs is not None:
        check_docs_page(args.docs)  # before the benchmark, not after it
    report = run_speed_benchmark(
        args.configs or [Path(path) for path in DEFAULT_CONFIGS], args.epochs, args.data_root, args.cache_dir,
        args.overrides, peers_python=args.peers, peer_datasets=args.peer_datasets or DEFAULT_PEER_DATASETS,
    )
    print(report)
    if args.out is not None:
        args.out.write_text(report + "\n")
    if args.docs is not None:
        replace_docs_section(args.docs, docs_section(_speed_command(args), report))
        print(f"\n{args.docs}: section between its bench speed markers rewritten")
    return 0


def _speed_command(args: argparse.Namespace) -> str:
    """The ``recsys bench speed`` command line that ``args`` came from (for the docs page)."""
    words = ["recsys", "bench", "speed"]
    if args.configs:
        words += ["--configs", *map(str, args.configs)]
    words += ["--epochs", str(args.epochs), "--data-root", str(args.data_root)]
    if args.cache_dir is not None:
        words += ["--cache-dir", str(args.cache_dir)]
    if args.peers is not None:
        words += ["--peers", str(args.peers)]
    if args.peer_datasets:
        words += ["--peer-datasets", *args.peer_datasets]
    if args.out is not None:
        words += ["--out", str(args.out)]
    words += ["--docs", str(args.docs), *args.overrides]
    return shlex.join(words)


def _bench_samplers(args: argparse.Namespace) -> int:
    from recsys.bench.samplers import run_sampler_benchmark

    return _bench(args, run_sampler_benchmark)


def _bench(args: argparse.Namespace, run) -> int:
    """Run a benchmark over ``--configs`` (default: the ml-100k and Gowalla MF-BPR configs), print its
    Markdown and write it to ``--out``."""
    from recsys.bench.samplers import DEFAULT_CONFIGS

    configs = args.configs or [Path(path) for path in DEFAULT_CONFIGS]
    report = run(configs, args.epochs, args.data_root, args.cache_dir)
    print(report)
    if args.out is not None:
        args.out.write_text(report + "\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``recsys`` console script."""
    args = build_parser().parse_args(argv)
    tune_malloc()  # before the first tensor: freed tensor-sized blocks are reused, not unmapped
    # SIGTERM (a scheduler, `kill`) ends a run like Ctrl-C: its MLflow run is closed as KILLED.
    signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        return args.handler(args)
    except UserError as error:
        print(f"recsys: error: {error}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, SystemExit) as interrupt:
        # Lightning turns Ctrl-C into SystemExit(1) after closing its loops (and ignores SIGINT since).
        if isinstance(interrupt, SystemExit) and not interrupt.code:
            return 0
        print("recsys: interrupted", file=sys.stderr)
        return 1
    except Exception:  # a bug, not a user mistake: keep the traceback
        traceback.print_exc()
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


if __name__ == "__main__":
    sys.exit(main())
