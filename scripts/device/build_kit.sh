#!/usr/bin/env bash
# Build .device/kit.tar.xz: what a GPU machine of the `device` tool lacks to run recsys (it has Python
# 3.12 with torch, lightning, numpy, scipy, pyarrow, pytest and matplotlib, and no network), plus the
# Gowalla and Yelp2018 LightGCN splits. Run here, where PyPI is reachable; then give the device tool
#   carry: [".device"]   command: bash scripts/device/issue4.sh
# The wheels are the versions installed in this checkout's .venv. The kit must stay well under the
# tool's 64 MiB working-tree limit (polars' runtime alone is a 54 MB wheel): it is one xz archive
# (about 50 MB).
#   bash scripts/device/build_kit.sh [PYTHON_VERSION, default 3.12] [DATA_ROOT, default ../shared/data]
set -euo pipefail
cd "$(dirname "$0")/../.."
python_version="${1:-3.12}"
data_root="${2:-../shared/data}"
# recsys's imports (fit, evaluate, tune, the tests) that the device image does not hold, protobuf,
# whose version opentelemetry pins, and importlib-metadata, which mlflow imports (missing there: seen on
# an H200 on 2026-11-28).
packages=(alembic annotated-types cachetools cffi cryptography databricks-sdk fastapi google-auth pyasn1
          pyasn1-modules Mako mlflow-skinny mlflow-tracing opentelemetry-api opentelemetry-proto
          opentelemetry-sdk opentelemetry-semantic-conventions optuna optuna-integration polars
          polars-runtime-32 pydantic pydantic_core SQLAlchemy sqlparse starlette typing-inspection colorlog
          protobuf importlib-metadata)
pins=()
for name in "${packages[@]}"; do
    version=$(.venv/bin/python -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name")
    pins+=("$name==$version")
done
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
python3 -m pip install --quiet --no-deps --only-binary=:all: --no-compile --target "$stage/site" \
    --python-version "$python_version" --implementation cp \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
    --platform manylinux_2_34_x86_64 --platform manylinux1_x86_64 "${pins[@]}"
rm -rf "$stage/site/bin"
for dataset in gowalla yelp2018; do
    mkdir -p "$stage/data/$dataset"
    cp "$data_root/$dataset"/{train.txt,test.txt,SOURCE.md} "$stage/data/$dataset/"
done
printf '%s\n' "python ${python_version}" "${pins[@]}" > "$stage/MANIFEST"
mkdir -p .device
tar -C "$stage" -cf - site data MANIFEST | xz -T0 -6 > .device/kit.tar.xz.part
mv .device/kit.tar.xz.part .device/kit.tar.xz  # never a half-written kit
echo ".device/kit.tar.xz: $(du -h .device/kit.tar.xz | cut -f1) (${#pins[@]} packages for Python ${python_version}, gowalla, yelp2018)"
