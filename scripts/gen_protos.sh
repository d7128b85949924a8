#!/bin/sh
# Regenerate the Python gRPC modules under src/ from every .proto under proto/. One naming
# scheme: a module's path is its .proto's path under proto/ (and the path other protos import
# it by), so proto/X/Y/z.proto is the module X.Y.z_pb2:
#   proto/confer/v1/*.proto                   the native API          -> confer.v1.*_pb2
#   proto/confer/etcdpb/<package>/*.proto     our description of etcd's v3 wire format (its
#                                             gRPC packages etcdserverpb, mvccpb, authpb,
#                                             v3lockpb, v3electionpb) -> confer.etcdpb.<package>.*_pb2
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
        --grpc_python_out="$1" $(find proto -name '*.proto' | sort)
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
