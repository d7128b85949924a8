#!/bin/sh
# Regenerate the Python gRPC modules in src/confer/v1 from proto/confer/v1/*.proto.
# The generated files are committed, so users and CI need no protoc.
set -eu
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
"$PY" -m grpc_tools.protoc -Iproto --python_out=src --pyi_out=src --grpc_python_out=src \
    proto/confer/v1/*.proto
touch src/confer/v1/__init__.py
