#!/bin/sh
# The image's entrypoint: `confer serve`, its settings in CONFER_* variables (a flag
# --some-name reads CONFER_SOME_NAME; docs/operations.md), flags given to the container
# added after. Any other command (`docker run IMAGE confer status`) runs as given.
#
# In a Kubernetes StatefulSet (PEER_SERVICE set: the headless Service's name), a pod knows
# only its name, NAME-ORDINAL; from it this derives the member's settings, so that every
# pod runs the same spec:
#   CONFER_ID            ORDINAL + 1 (member ids start at 1)
#   CONFER_NAME          the pod's name
#   CONFER_ADVERTISE_*   POD.PEER_SERVICE.POD_NAMESPACE.svc.CLUSTER_DOMAIN:PORT, the pod's
#                        stable DNS name (without POD_NAMESPACE: POD.PEER_SERVICE)
#   CONFER_INITIAL_CLUSTER  ID=POD@ADDRESS for the ordinals 0 .. INITIAL_CLUSTER_SIZE-1
# A variable set already wins. (These inputs are not named CONFER_*: `confer` warns about
# CONFER_* variables that no flag reads.)
set -eu

case "${1:-}" in
    '' | -*) ;;          # flags of `confer serve`, or none
    *) exec "$@" ;;
esac

fail() {
    echo "confer-entrypoint: $*" >&2
    exit 2
}

port_of() {  # HOST:PORT -> PORT
    echo "${1##*:}"
}

# Container runtimes put the host name (a pod's name) in the environment as HOSTNAME.
# shellcheck disable=SC3028
host=${HOSTNAME:-$(hostname)}
client_port=$(port_of "${CONFER_LISTEN_CLIENT:-127.0.0.1:7379}")
peer_port=$(port_of "${CONFER_LISTEN_PEER:-127.0.0.1:7380}")

if [ -n "${PEER_SERVICE:-}" ]; then
    ordinal=${host##*-}
    base=${host%-*}
    case "$ordinal" in
        '' | *[!0-9]*) fail "host name $host does not end in -ORDINAL (a StatefulSet pod's)" ;;
    esac
    [ "$base" != "$host" ] || fail "host name $host does not end in -ORDINAL (a StatefulSet pod's)"
    size=${INITIAL_CLUSTER_SIZE:-3}
    case "$size" in
        '' | *[!0-9]* | 0) fail "INITIAL_CLUSTER_SIZE must be a positive integer, not '$size'" ;;
    esac
    # Pods past the initial cluster would found clusters of their own: refuse them. A
    # cluster grows by `confer member add` + `--join` (docs/operations.md, "Deploying").
    [ "$ordinal" -lt "$size" ] \
        || fail "pod $host is not one of the $size initial members (INITIAL_CLUSTER_SIZE);" \
                "grow the cluster with --join, not by scaling the StatefulSet"
    domain=$PEER_SERVICE
    if [ -n "${POD_NAMESPACE:-}" ]; then
        domain=$domain.$POD_NAMESPACE.svc.${CLUSTER_DOMAIN:-cluster.local}
    fi
    members=
    i=0
    while [ "$i" -lt "$size" ]; do
        members="${members:+$members,}$((i + 1))=$base-$i@$base-$i.$domain:$peer_port"
        i=$((i + 1))
    done
    export CONFER_ID="${CONFER_ID:-$((ordinal + 1))}"
    export CONFER_NAME="${CONFER_NAME:-$host}"
    export CONFER_INITIAL_CLUSTER="${CONFER_INITIAL_CLUSTER:-$members}"
    export CONFER_ADVERTISE_PEER="${CONFER_ADVERTISE_PEER:-$host.$domain:$peer_port}"
    export CONFER_ADVERTISE_CLIENT="${CONFER_ADVERTISE_CLIENT:-$host.$domain:$client_port}"
fi

# Listening on every interface (0.0.0.0, [::]) is no address to give others: advertise the
# host name instead (in a compose network, the container's name resolves).
case "${CONFER_LISTEN_PEER:-}" in
    0.0.0.0:* | \[::\]:*) export CONFER_ADVERTISE_PEER="${CONFER_ADVERTISE_PEER:-$host:$peer_port}" ;;
esac
case "${CONFER_LISTEN_CLIENT:-}" in
    0.0.0.0:* | \[::\]:*) export CONFER_ADVERTISE_CLIENT="${CONFER_ADVERTISE_CLIENT:-$host:$client_port}" ;;
esac

exec confer serve "$@"
