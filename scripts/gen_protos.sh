#!/bin/sh
# Regenerate the Python gRPC modules in src/confer/v1 from proto/confer/v1/*.proto, and the
# etcd v3 API modules in src/confer/etcdpb from proto/etcd/*/*.proto (our own description of
# etcd's wire format; its gRPC packages are etcdserverpb, mvccpb, authpb, v3lockpb and
# v3electionpb). proto/etcd is mapped to the import path confer/etcdpb, so the generated
# modules are confer.etcdpb.<package>.<file>_pb2 and clash with nothing.
# The generated files are committed, so users need no protoc.
#
#   scripts/gen_protos.sh          regenerate in place (after editing proto/)
#   scripts/gen_protos.sh --check  regenerate into a temporary directory and compare with the
#                                  committed files (etcd's verify_genproto); exit 1 on any
#                                  difference. ./dev lint, and so CI, runs it.
# Both use grpcio-tools from the test extra, pinned to the version that made the committed
# files, so a check never fails on a version string alone.
set -eu
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}

# Writes the confer/v1 and confer/etcdpb packages under $1 (src, or a temporary directory).
generate() {
    "$PY" -m grpc_tools.protoc -Iproto --python_out="$1" --pyi_out="$1" \
        --grpc_python_out="$1" proto/confer/v1/*.proto
    "$PY" -m grpc_tools.protoc -Iconfer/etcdpb=proto/etcd --python_out="$1" --pyi_out="$1" \
        --grpc_python_out="$1" proto/etcd/*/*.proto
    for d in "$1/confer/v1" "$1/confer/etcdpb" "$1"/confer/etcdpb/*/; do
        touch "${d%/}/__init__.py"
    done
}

if ! "$PY" -c "import grpc_tools" 2>/dev/null; then
    echo "gen_protos: grpcio-tools is missing from $PY (pip install -e '.[test]')" >&2
    exit 2
fi
case "${1:-}" in
    "")
        generate src ;;
    --check)
        tmp=$(mktemp -d)
        trap 'rm -rf "$tmp"' EXIT
        generate "$tmp"
        status=0
        for pkg in confer/v1 confer/etcdpb; do
            diff -r -x __pycache__ "$tmp/$pkg" "src/$pkg" >>"$tmp/diff" || status=$?
        done
        if [ "$status" -ne 0 ]; then
            cat "$tmp/diff" >&2
            echo "gen_protos --check: the generated code in src/confer/v1 and src/confer/etcdpb" \
                "does not match proto/ (above: '<' regenerated, '>' committed)." \
                "Run scripts/gen_protos.sh and commit the result." >&2
            exit 1
        fi
        echo "gen_protos --check: src/confer/v1 and src/confer/etcdpb match proto/" ;;
    *)
        echo "usage: scripts/gen_protos.sh [--check]" >&2
        exit 2 ;;
esac
