#!/usr/bin/env bash
# Issue 4's GPU checks in one call of the device tool (about 6-8 minutes on an H100/H200), after
# `bash scripts/device/build_kit.sh` here:
#   run(command="bash scripts/device/issue4.sh", carry=[".device"], timeout_s=590)
# Steps, most wanted first; each writes $OUT/<step>.log (logs come back even if the call is cut short)
# and prints its last lines:
#   env          versions, the GPU, and that every recsys import resolves
#   lightgcn_60s_lr*  LightGCN on Gowalla (configs/gowalla/lightgcn.yaml) under a 60 s training budget
#                (Lightning's max_time), best checkpoint tested: the issue's ">= 0.1313 within 60 s";
#                at the paper's lr 1e-3 and at 5e-3
#   graph        scripts/graph_products.py on the GPU: SparseMatrix against torch.sparse.mm CSR
#   speed        recsys bench speed: s/epoch of LightGCN, SimpleX and MF-BPR (BARS) on the GPU
#   gpu_tests    tests/test_gpu.py: CUDA against CPU, every model family trained on the GPU
#   candidates   scripts/candidate_scores.py on the GPU
# Overrides (a dry run on a CPU): PYTHON, DEVICE=cpu, BUDGET (Lightning max_time), LIGHTGCN_LRS, SPEED_OVERRIDES.
set -uo pipefail
cd "$(dirname "$0")/../.."
out="${OUT:-/tmp/recsys-issue4}"
mkdir -p "$out"
python="${PYTHON:-python3}"
device="${DEVICE:-cuda}"
budget="${BUDGET:-00:00:01:00}"
kit="${KIT_DIR:-/tmp/recsys-kit}"
if [ ! -d "$kit/site" ]; then
    mkdir -p "$kit" && xz -T0 -dc .device/kit.tar.xz | tar -C "$kit" -xf - || { echo "no kit: run scripts/device/build_kit.sh and carry .device"; exit 2; }
fi
export PYTHONPATH="$kit/site:$PWD" PYTHONUNBUFFERED=1 MPLBACKEND=Agg
data="$kit/data"
store="sqlite:///$kit/mlflow-$(date +%s).db"

step() {  # step NAME TIMEOUT_S COMMAND...
    local name=$1 limit=$2 started=$SECONDS
    shift 2
    echo "== $name: $*"
    timeout "$limit" "$@" > "$out/$name.log" 2>&1
    echo "== $name: rc $? after $((SECONDS - started)) s"
    grep -v "INFO\|Warning\|warnings.warn" "$out/$name.log" | tail -n 30
}

step env 60 "$python" -c "
import sys, torch, lightning, numpy, scipy, polars, pydantic, mlflow, optuna, optuna_integration, sqlalchemy
import recsys.cli, recsys.experiment, recsys.tuning.study
print(sys.version.split()[0], 'torch', torch.__version__, 'lightning', lightning.__version__, 'numpy', numpy.__version__,
      'scipy', scipy.__version__, 'polars', polars.__version__, 'mlflow', mlflow.__version__, 'optuna', optuna.__version__)
print('device:', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA')
"
summarise() {  # the latest run of an MLflow SQLite store: epochs, s/epoch, validation curve, test
    "$python" - "$1" <<'PY'
import sqlite3, statistics, sys
db = sqlite3.connect(sys.argv[1].removeprefix("sqlite:///"))
run = db.execute("select run_uuid from runs order by start_time desc limit 1").fetchone()[0]
rows = db.execute("select key, step, value from metrics where run_uuid = ? order by step", (run,)).fetchall()
curve = {key: [(step, value) for k, step, value in rows if k == key] for key in {k for k, _, _ in rows}}
train = [value for _, value in curve.get("time/epoch_train_s", [])]
print(f"epochs {len(train)}, train s/epoch median {statistics.median(train):.2f}" if train else "no epoch")
print("val recall@20 by epoch:", " ".join(f"{s}:{v:.4f}" for s, v in curve.get("val/recall_at_20", [])))
print("test:", {k: round(v[-1][1], 4) for k, v in curve.items() if k.startswith("test/") and k.endswith("_at_20")})
PY
}
# The paper's lr 1e-3, then 5e-3: on the CPU, 5e-3 reached each validation Recall@20 up to 0.177 in a fifth
# to a third of the epochs, then flattened (docs/results.md).
for lr in ${LIGHTGCN_LRS:-1e-3 5e-3}; do
    step "lightgcn_60s_lr$lr" 200 "$python" -m recsys.cli fit -c configs/gowalla/lightgcn.yaml --data-root "$data" \
        --tracking-uri "$store" --no-progress "train.max_time=$budget" "train.lr=$lr"
    summarise "$store" | tee -a "$out/lightgcn_60s_lr$lr.log"
done
step graph 90 "$python" scripts/graph_products.py --data-root "$data" --device "$device"
# shellcheck disable=SC2086  # SPEED_OVERRIDES is a list of KEY=VALUE words
step speed 200 "$python" -m recsys.cli bench speed --configs configs/gowalla/lightgcn.yaml \
    configs/yelp2018/simplex.yaml configs/gowalla/simplex.yaml configs/gowalla/mf_bpr_bars.yaml --epochs 2 \
    --data-root "$data" --tracking-uri "$store" ${SPEED_OVERRIDES:-}
step gpu_tests 150 "$python" -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider
step candidates 60 "$python" scripts/candidate_scores.py --device "$device" --repeats 20
