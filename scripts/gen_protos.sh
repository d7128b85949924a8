#!/bin/sh
# Regenerate the Python gRPC modules in src/confer/v1 from proto/confer/v1/*.proto, and the
# etcd v3 API modules in src/confer/etcdpb from proto/etcd/*/*.proto (our own description of
# etcd's wire format; its gRPC packages are etcdserverpb, mvccpb, authpb, v3lockpb and
# v3electionpb). proto/etcd is mapped to the import path confer/etcdpb, so the generated
# modules are confer.etcdpb.<package>.<file>_pb2 and clash with nothing.
# The generated files are committed, so users and CI need no protoc.
set -eu
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
"$PY" -m grpc_tools.protoc -Iproto --python_out=src --pyi_out=src --grpc_python_out=src \
    proto/confer/v1/*.proto
touch src/confer/v1/__init__.py
"$PY" -m grpc_tools.protoc -Iconfer/etcdpb=proto/etcd --python_out=src --pyi_out=src \
    --grpc_python_out=src proto/etcd/*/*.proto
for d in src/confer/etcdpb src/confer/etcdpb/*/; do
    touch "$d/__init__.py"
done
