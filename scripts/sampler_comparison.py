"""Every sampler on one MF config, several seeds: the table of docs/results.md.

Each (sampler, seed) is one `recsys fit` (early stopping as configured) tracked in the given MLflow
store; already finished runs (same name and seed in the store) are not run again. Prints a Markdown
table of test Recall@20 / NDCG@20 (mean ± sd over seeds), median seconds per training epoch, epochs run,
and the sampler's false-negative rate and hardness at the best epoch.

    python scripts/sampler_comparison.py -c configs/ml-100k/mf_bpr.yaml --seeds 2020 1 2 \\
        --data-root ../shared/data --tracking-uri sqlite:///tracking/samplers.db train.patience=30
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

from mlflow.tracking import MlflowClient

# (label, overrides) per sampler; losses are paired where the sampler needs one.
VARIANTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("uniform, excluding positives", ("sampler.name=uniform", "sampler.exclude_positives=true")),
    ("uniform", ("sampler.name=uniform", "sampler.exclude_positives=false")),
    ("popularity alpha 0.75", ("sampler.name=popularity", "sampler.alpha=0.75")),
    ("popularity alpha 1", ("sampler.name=popularity", "sampler.alpha=1.0")),
    ("in_batch + BPR", ("sampler.name=in_batch",)),
    ("in_batch + sampled softmax, log-Q", ("sampler.name=in_batch", "loss.name=sampled_softmax",
                                          "loss.log_q_correction=true")),
    ("topk 1 of 4 (DNS), pool blocks", ("sampler.name=topk", "sampler.candidates=4")),  # the default base
    ("topk 1 of 4 (DNS), pooled", ("sampler.name=topk", "sampler.candidates=4",
                                   "sampler.base={name: uniform, exclude_positives: true, pool: 256}")),
    ("topk 1 of 4 (DNS), per-query candidates", ("sampler.name=topk", "sampler.candidates=4",
                                                 "sampler.base={name: uniform, exclude_positives: true}")),
    ("topk 1 of 64 (DNS), pool blocks", ("sampler.name=topk", "sampler.candidates=64")),
    ("topk 1 of 64 (DNS), pooled", ("sampler.name=topk", "sampler.candidates=64",
                                    "sampler.base={name: uniform, exclude_positives: true, pool: 256}")),
    ("topk 1 of 64 (DNS), per-query candidates", ("sampler.name=topk", "sampler.candidates=64",
                                                  "sampler.base={name: uniform, exclude_positives: true}")),
    ("topk 1 of 64, one candidate set per batch", ("sampler.name=topk", "sampler.candidates=64",
                                                   "sampler.base={name: uniform, shared: true, exclude_positives: true}")),
    ("ambiguous 1 of 64 (SimANS), pool blocks", ("sampler.name=ambiguous",)),  # the default base
    ("ambiguous 1 of 64 (SimANS), pooled", ("sampler.name=ambiguous",
                                            "sampler.base={name: uniform, exclude_positives: true, pool: 256}")),
    ("noisy_label_robust + nbpo", ("sampler.name=noisy_label_robust", "loss.name=nbpo")),
    ("mnar + relmf (Rel-MF)", ("sampler.name=mnar", "loss.name=relmf")),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--config", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[2020])
    parser.add_argument("--data-root", type=Path, required=True)
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--experiment", default=None, help="MLflow experiment (default: samplers-<config stem>)")
    parser.add_argument("--only", nargs="+", default=None, metavar="LABEL",
                        help="run only the variants with these labels")
    parser.add_argument("overrides", nargs="*", help="applied to every run")
    args = parser.parse_args()
    experiment = args.experiment or f"samplers-{args.config.parent.name}-{args.config.stem}"
    client = MlflowClient(args.tracking_uri)

    def finished(label: str, seed: int):
        found = client.get_experiment_by_name(experiment)
        if found is None:
            return None
        runs = client.search_runs(
            [found.experiment_id],
            filter_string=f"attributes.run_name = '{label}' and tags.seed = '{seed}' and attributes.status = 'FINISHED'",
        )
        return runs[0] if runs else None

    rows = []
    unknown = sorted(set(args.only or ()) - {label for label, _ in VARIANTS})
    if unknown:
        parser.error(f"--only: no variant labelled {', '.join(map(repr, unknown))}")
    variants = [v for v in VARIANTS if args.only is None or v[0] in args.only]
    for label, overrides in variants:
        runs = []
        for seed in args.seeds:
            run = finished(label, seed)
            if run is None:
                command = [
                    sys.executable, "-m", "recsys.cli", "fit", "-c", str(args.config), "--data-root", str(args.data_root),
                    "--tracking-uri", args.tracking_uri, "--no-progress", f"seed={seed}",
                    f"tracking.experiment={experiment}", f"tracking.run_name={label}", "tracking.log_checkpoint=false",
                    *args.overrides, *overrides,
                ]
                print(f"{label}, seed {seed} ...", file=sys.stderr, flush=True)
                subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
                run = finished(label, seed)
            runs.append(run)
        rows.append((label, runs))
    print(_table(client, rows, args.seeds))


def _table(client: MlflowClient, rows, seeds: list[int]) -> str:
    def spread(values: list[float]) -> str:
        if len(values) == 1:
            return f"{values[0]:.4f}"
        return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"

    lines = [
        "| sampler | Recall@20 | NDCG@20 | s/epoch | epochs | false-negative rate | hardness |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, runs in rows:
        recall = [r.data.metrics["test/recall_at_20"] for r in runs]
        ndcg = [r.data.metrics["test/ndcg_at_20"] for r in runs]
        seconds, epochs, false_negatives, hardness = [], [], [], []
        for run in runs:
            history = client.get_metric_history(run.info.run_id, "time/epoch_train_s")
            seconds.append(statistics.median(m.value for m in history))
            epochs.append(int(run.data.tags["epochs"]))
            best = int(run.data.tags["best_epoch"])
            for key, into in (("sampler/false_negative_rate", false_negatives), ("sampler/hardness", hardness)):
                values = {m.step: m.value for m in client.get_metric_history(run.info.run_id, key)}
                into.append(values.get(best, float("nan")))
        lines.append(
            f"| {label} | {spread(recall)} | {spread(ndcg)} | {statistics.median(seconds):.3f} | "
            f"{'/'.join(map(str, epochs))} | {statistics.mean(false_negatives):.4f} | {statistics.mean(hardness):.3f} |"
        )
    return f"seeds: {', '.join(map(str, seeds))}\n\n" + "\n".join(lines)


if __name__ == "__main__":
    main()
