#!/usr/bin/env bash
# Several test "hosts" on this machine: network namespaces joined by a bridge, for running
# `mpirun --hostfile` across hosts in CI (see hostfiles/netns-test and the README).
#
#   scripts/netns-cluster.sh install          install iproute2 when missing (Debian, root)
#   scripts/netns-cluster.sh up NAME [K]      hosts 1..K (default 2): namespaces NAME-h1..NAME-hK, each
#                                             with lo and eth0 = 198.18.0.k/24, its port on a bridge
#                                             in namespace NAME-sw
#   scripts/netns-cluster.sh down NAME        kill every process left in those namespaces, delete them
#   scripts/netns-cluster.sh exec NAME k CMD...   run CMD on host k (its namespace, hostname hk)
#   scripts/netns-cluster.sh cut NAME k       take host k's link down (ip link set eth0 down)
#   scripts/netns-cluster.sh mend NAME k      bring it back up
#   scripts/netns-cluster.sh shape NAME RATE [DELAY]   limit every host's link: what it sends leaves at
#                                             RATE (tc units, e.g. 10gbit; a token bucket, tbf), and
#                                             with DELAY (e.g. 20us) that much later (netem, when the
#                                             kernel has it); RATE 0 removes the limit
#
# Open MPI reaches the other hosts through scripts/netns-rsh (--mca plm_rsh_agent), which enters the
# host's namespace instead of ssh-ing to it; it reads NAME from REC_DIST_NETNS.
#
# The test subnet 198.18.0.0/24 (reserved for network testing) exists only on the virtual links made
# here: the namespaces have no other interface and no default route, so nothing they send can leave
# them, and nothing is added to this machine's own network namespace. Needs root and iproute2
# (installed when missing).
set -euo pipefail

say() { printf 'netns-cluster: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

subnet_prefix=198.18.0

need_ip() {
    command -v ip >/dev/null && return 0
    [ "$(id -u)" -eq 0 ] || die "iproute2 (ip) is missing and installing it needs root"
    say "installing iproute2"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        -o DPkg::Lock::Timeout=300 iproute2; } \
        >/tmp/netns-cluster-apt.log 2>&1 || { tail -20 /tmp/netns-cluster-apt.log >&2; die "apt-get install iproute2 failed"; }
}

check_name() {
    [[ "${1:-}" =~ ^[A-Za-z0-9_.-]{1,40}$ ]] || die "give a namespace prefix (letters, digits, _ . -), got '${1:-}'"
}

ns_exists() { ip netns list | awk '{print $1}' | grep -qx "$1"; }

up() {
    local name="$1" hosts="${2:-2}"
    check_name "$name"
    [[ "$hosts" =~ ^[1-9]$ ]] || die "hosts must be 1 to 9, got '$hosts'"
    need_ip
    local sw="$name-sw"
    ns_exists "$sw" && die "namespace $sw exists already: run '$0 down $name' first"
    # On any failure, remove what was made so far.
    trap 'down "$name" >/dev/null 2>&1 || true' ERR
    ip netns add "$sw"
    ip -n "$sw" link set lo up
    ip -n "$sw" link add br0 type bridge
    ip -n "$sw" link set br0 up
    local k ns
    for k in $(seq 1 "$hosts"); do
        ns="$name-h$k"
        ip netns add "$ns"
        ip -n "$ns" link set lo up
        # The veth pair is made inside the host's namespace with its peer in the switch's, so no
        # interface ever appears in this machine's own namespace.
        ip -n "$ns" link add eth0 type veth peer name "p$k" netns "$sw"
        ip -n "$sw" link set "p$k" master br0
        ip -n "$sw" link set "p$k" up
        ip -n "$ns" addr add "$subnet_prefix.$k/24" dev eth0
        ip -n "$ns" link set eth0 up
    done
    trap - ERR
    # Wait until every host reaches every other (the bridge forwards once its ports are up).
    local deadline=$((SECONDS + 10)) j
    for k in $(seq 1 "$hosts"); do
        for j in $(seq 1 "$hosts"); do
            [ "$k" = "$j" ] && continue
            # A TCP connect to a closed port: "refused" means host j answered.
            until [[ "$(ip netns exec "$name-h$k" timeout 2 bash -c "exec 3<>/dev/tcp/$subnet_prefix.$j/9" 2>&1)" == *refused* ]]; do
                [ $SECONDS -lt $deadline ] || { down "$name"; die "host $k cannot reach host $j"; }
                sleep 0.1
            done
        done
    done
    say "hosts $name-h1..$name-h$hosts up on $subnet_prefix.1-$hosts (bridge in $sw)"
}

down() {
    local name="$1"
    check_name "$name"
    command -v ip >/dev/null || return 0
    local ns pids pid
    for ns in $(ip netns list | awk '{print $1}' | grep -E "^$(printf '%s' "$name" | sed 's/[.]/\\./g')-(sw|h[0-9])$" || true); do
        # Processes still inside: started by this script's users (mpirun's ranks and daemons).
        pids="$(ip netns pids "$ns" 2>/dev/null || true)"
        for pid in $pids; do kill -KILL "$pid" 2>/dev/null || true; done
        ip netns delete "$ns" 2>/dev/null || say "could not delete namespace $ns"
    done
}

# Runs CMD on host k: inside its namespace, with its own hostname (a UTS namespace), so Open MPI
# and the logs tell the hosts apart.
exec_on() {
    local name="$1" k="$2"; shift 2
    check_name "$name"
    [[ "$k" =~ ^[1-9]$ ]] || die "host number must be 1 to 9, got '$k'"
    ns_exists "$name-h$k" || die "no namespace $name-h$k: run '$0 up $name' first"
    [ $# -gt 0 ] || die "nothing to run"
    exec ip netns exec "$name-h$k" unshare --uts -- bash -c 'echo "$0" >/proc/sys/kernel/hostname && exec "$@"' "h$k" "$@"
}

link() {
    local name="$1" k="$2" state="$3"
    check_name "$name"
    ip -n "$name-h$k" link set eth0 "$state"
}

# Every host's outgoing traffic passes one queue (its eth0), so a message between two hosts meets
# the limit once, as on a switched network with one link per host. The token bucket holds 64 kB
# (one TCP segment offload); hardware links do not burst above their rate either.
shape() {
    local name="$1" rate="$2" delay="${3:-}" ns
    check_name "$name"
    [[ "$rate" =~ ^[0-9]+([.][0-9]+)?([kmgt]?bit)?$ ]] || die "rate must be a tc rate such as 10gbit (or 0), got '$rate'"
    [ -z "$delay" ] || [[ "$delay" =~ ^[0-9]+([.][0-9]+)?(us|ms)$ ]] || die "delay must be such as 20us or 1ms, got '$delay'"
    command -v tc >/dev/null || die "tc (iproute2) is missing: run '$0 install'"
    for ns in $(ip netns list | awk '{print $1}' | grep -E "^$(printf '%s' "$name" | sed 's/[.]/\\./g')-h[0-9]$"); do
        ip netns exec "$ns" tc qdisc del dev eth0 root 2>/dev/null || true
        [ "$rate" = 0 ] && continue
        if [ -n "$delay" ]; then
            ip netns exec "$ns" tc qdisc add dev eth0 root netem delay "$delay" rate "$rate" limit 100000 2>/dev/null \
                || die "this kernel has no netem queue (sch_netem) to add a delay: shape with a rate alone"
        else
            ip netns exec "$ns" tc qdisc add dev eth0 root tbf rate "$rate" burst 64kb latency 100ms
        fi
    done
}

case "${1:-}" in
    install) need_ip ;;
    up) shift; up "${1:-}" "${2:-2}" ;;
    down) shift; down "${1:-}" ;;
    exec) shift; exec_on "$@" ;;
    cut) shift; link "${1:-}" "${2:-}" down ;;
    mend) shift; link "${1:-}" "${2:-}" up ;;
    shape) shift; shape "${1:-}" "${2:-}" "${3:-}" ;;
    *) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 2 ;;
esac
