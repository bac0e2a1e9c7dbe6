#!/usr/bin/env sh
# Regenerate every committed protobuf/gRPC stub under proto/ (run from anywhere).
# Each directory holding .proto files is compiled with -I proto, so imports read
# `from marketdata import market_data_pb2` / `from riskmonitor.v1 import ...`.
set -eu
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
for dir in $(find proto -name '*.proto' -exec dirname {} \; | sort -u); do
    echo "generating $dir" >&2
    "$PYTHON" -m grpc_tools.protoc -I proto \
        --python_out=proto --grpc_python_out=proto \
        --mypy_out=proto --mypy_grpc_out=proto \
        "$dir"/*.proto
done
