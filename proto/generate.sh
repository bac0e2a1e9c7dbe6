#!/usr/bin/env sh
# Regenerate every committed protobuf/gRPC stub under proto/ (run from anywhere).
# Each directory holding .proto files is compiled with -I proto, so imports read
# `from marketdata import market_data_pb2` / `from riskmonitor.v1 import ...`.
# PYTHON picks the interpreter (its bin/ must hold protoc-gen-mypy from mypy-protobuf);
# OUT writes elsewhere than proto/ (the staleness test compares a fresh copy with the committed one).
set -eu
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
OUT="${OUT:-proto}"
PATH="$(dirname "$(command -v "$PYTHON")"):$PATH"
export PATH
for dir in $(find proto -name '*.proto' -exec dirname {} \; | sort -u); do
    echo "generating $dir" >&2
    "$PYTHON" -m grpc_tools.protoc -I proto \
        --python_out="$OUT" --grpc_python_out="$OUT" \
        --mypy_out="$OUT" --mypy_grpc_out="$OUT" \
        "$dir"/*.proto
done
