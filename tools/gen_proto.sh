#!/usr/bin/env bash
# Generates Python code (with .pyi stubs and gRPC stubs) for every Herald proto into
# gen/. google/rpc/*.proto are vendored only so imports resolve: their Python code
# comes from googleapis-common-protos. Run through `make proto`; never edit gen/.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-$root/.venv/bin/python}
out=$root/gen
wkt=$("$py" -c 'import grpc_tools, os; print(os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))')
rm -rf "$out.tmp" && mkdir -p "$out.tmp"
cd "$root/proto"
mapfile -t files < <(find . -name '*.proto' -not -path './google/*' | sed 's|^\./||' | sort)
bin=$(dirname "$py")
# .pyi stubs from mypy-protobuf: typed messages and typed (aio) gRPC stubs.
"$py" -m grpc_tools.protoc -I . -I "$wkt" \
  --plugin=protoc-gen-mypy="$bin/protoc-gen-mypy" \
  --plugin=protoc-gen-mypy_grpc="$bin/protoc-gen-mypy_grpc" \
  --python_out="$out.tmp" --grpc_python_out="$out.tmp" \
  --mypy_out="$out.tmp" --mypy_grpc_out="$out.tmp" "${files[@]}"
rm -rf "$out" && mv "$out.tmp" "$out"
touch "$out/.stamp"
