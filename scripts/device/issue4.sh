#!/usr/bin/env bash
# Issue 4's GPU checks in one call of the device tool (TOTAL seconds, default 560), after
# `bash scripts/device/build_kit.sh` here:
#   run(command="bash scripts/device/issue4.sh", carry=[".device"], timeout_s=600)
# Steps, most wanted first; each writes $OUT/<step>.log (logs come back even if the call is cut short)
# and prints its last lines:
#   env          versions, the GPU, and that every recsys import resolves
#   gpu_tests    tests/test_gpu.py: CUDA against CPU, every model family trained on the GPU
#   lightgcn_60s_lr1e-3  LightGCN on Gowalla (configs/gowalla/lightgcn.yaml) under a 60 s training budget
#                (Lightning's max_time), best checkpoint tested: the issue's ">= 0.1313 within 60 s";
#                again at lr 5e-3 (after the timings) only if the paper's lr 1e-3 falls short
#   graph        scripts/graph_products.py on the GPU: SparseMatrix's kernels against torch.sparse.mm
#   candidates   scripts/candidate_scores.py on the GPU
#   speed        recsys bench speed: s/epoch of LightGCN, MF-BPR (BARS) and SimpleX on the GPU
#   lightgcn_long  LightGCN on Gowalla at the paper's settings for the time left, trained as the paper
#                does on the whole train file (train.refit_epochs=1000: no validation carve-out, no
#                validation passes) and tested after the last epoch: how far towards the paper's 0.1830
#                (the issue's 15-minute goal); tested every 20 epochs too, as the paper's code does
#                (train.refit_test_every), a curve
# Overrides (a dry run on a CPU): PYTHON, DEVICE=cpu, BUDGET (Lightning max_time), TOTAL, SPEED_OVERRIDES,
# LONG_OVERRIDES (config overrides of lightgcn_long).
set -uo pipefail
cd "$(dirname "$0")/../.."
out="${OUT:-/tmp/recsys-issue4}"
mkdir -p "$out"
python="${PYTHON:-python3}"
device="${DEVICE:-cuda}"
budget="${BUDGET:-00:00:01:00}"
deadline=$((SECONDS + ${TOTAL:-560}))
kit="${KIT_DIR:-/tmp/recsys-kit}"
if [ ! -d "$kit/site" ]; then
    mkdir -p "$kit"
    if command -v xz > /dev/null; then
        xz -T0 -dc .device/kit.tar.xz | tar -C "$kit" -xf -
    else  # Python's lzma, where the image has no xz
        "${PYTHON:-python3}" -c "import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])" .device/kit.tar.xz "$kit"
    fi || { echo "no kit: run scripts/device/build_kit.sh and carry .device"; exit 2; }
    echo "== kit unpacked after $SECONDS s"
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
train = [value for _, value in curve.get("time/epoch_train_s", curve.get("refit/time/epoch_train_s", []))]
print(f"epochs {len(train)}, train s/epoch median {statistics.median(train):.2f}" if train else "no epoch")
print("val recall@20 by epoch:", " ".join(f"{s}:{v:.4f}" for s, v in curve.get("val/recall_at_20", [])))
if "refit/test/recall_at_20" in curve:
    print("refit test recall@20 by epoch:", " ".join(f"{s}:{v:.4f}" for s, v in curve["refit/test/recall_at_20"]))
print("test:", {k: round(v[-1][1], 4) for k, v in curve.items() if k.startswith("test/") and k.endswith("_at_20")})
PY
}
lightgcn() {  # lightgcn STEP LIMIT_S MAX_TIME LR [OVERRIDES...]: fit Gowalla, test, summarise the run
    local name=$1 limit=$2 max_time=$3 lr=$4
    shift 4
    step "$name" "$limit" "$python" -m recsys.cli fit -c configs/gowalla/lightgcn.yaml --data-root "$data" \
        --tracking-uri "$store" --no-progress "train.max_time=$max_time" "train.lr=$lr" "$@"
    summarise "$store" | tee -a "$out/$name.log"
}
# The paper's lr 1e-3; 5e-3 only where 1e-3 misses 0.1313: on the CPU, 5e-3 reached each validation
# Recall@20 up to 0.177 in a fifth to a third of the epochs, then flattened (docs/results.md).
step gpu_tests 150 "$python" -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider
lightgcn lightgcn_60s_lr1e-3 150 "$budget" 1e-3
step graph 60 "$python" scripts/graph_products.py --data-root "$data" --device "$device"
step candidates 60 "$python" scripts/candidate_scores.py --device "$device" --repeats 20
# Each config's row is printed as soon as it is measured (a cut-short step still reports).
# shellcheck disable=SC2086  # SPEED_OVERRIDES is a list of KEY=VALUE words
step speed 200 "$python" -m recsys.cli bench speed --configs configs/gowalla/lightgcn.yaml \
    configs/gowalla/mf_bpr_bars.yaml configs/yelp2018/simplex.yaml configs/gowalla/simplex.yaml --epochs 2 \
    --data-root "$data" --tracking-uri "$store" ${SPEED_OVERRIDES:-}
reached=$("$python" -c "
import re, sys
found = re.search(r\"'test/recall_at_20': ([0-9.]+)\", open(sys.argv[1]).read())
print(int(bool(found) and float(found.group(1)) >= 0.1313))" "$out/lightgcn_60s_lr1e-3.log")
if [ "$reached" != 1 ]; then
    lightgcn lightgcn_60s_lr5e-3 150 "$budget" 5e-3
fi
# The time left, less about 40 s for starting, testing and logging, as Lightning's max_time.
left=$((deadline - SECONDS - 40))
if [ "$left" -gt 30 ]; then
    # shellcheck disable=SC2086  # LONG_OVERRIDES is a list of KEY=VALUE words (e.g. model.init=xavier_uniform)
    lightgcn lightgcn_long $((left + 35)) "$(printf '00:00:%02d:%02d' $((left / 60)) $((left % 60)))" 1e-3 train.refit_epochs=1000 \
        train.refit_test_every=20 ${LONG_OVERRIDES:-}
fi
echo "== done after $SECONDS s"
