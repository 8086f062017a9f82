#!/usr/bin/env bash
# The measurements behind docs/scaling.md: on K network-namespace hosts (scripts/netns-cluster.sh,
# one rank per host) whose links are limited to each RATE, for N = 2 .. K ranks,
#   OUT/net-RATE-N.json    rec-dist bench --network (the cost model's calibration)
#   OUT/bench-RATE-N.json  rec-dist bench, replicated and row-sharded dlrm at 1024 and 128 per rank
# then the fit, the validation and the predictions (scripts/scaling_model.py) in OUT/model.md.
#
#   sudo scripts/scaling-runs.sh OUT [K=4] [RATE...=10gbit 1gbit]
#
# Needs root (namespaces) and a release build (./launch.sh builds one). Run it on an otherwise idle
# machine: the calibration times collectives of a few microseconds.
set -euo pipefail
out="${1:?usage: scripts/scaling-runs.sh OUT [K] [RATE...]}"
hosts="${2:-4}"
shift $(( $# >= 2 ? 2 : 1 ))
rates=("$@")
[ ${#rates[@]} -gt 0 ] || rates=(10gbit 1gbit)
root="$(cd "$(dirname "$0")/.." && pwd)"
name=scaling
mkdir -p "$out"
out="$(cd "$out" && pwd)"

"$root/scripts/netns-cluster.sh" up "$name" "$hosts"
trap '"$root/scripts/netns-cluster.sh" down "$name"' EXIT

run() {   # run N ARGS...: launch.sh -np N on hosts 1..N, mpirun started on host 1
    local n="$1"; shift
    local hostfile="$out/hosts-$n" share=()
    for k in $(seq 1 "$n"); do echo "198.18.0.$k slots=1"; done >"$hostfile"
    # More ranks than cores (the hosts share this machine's): a rank waiting in a collective yields
    # its core, as Open MPI does when it knows it is oversubscribed, instead of spinning a time slice.
    [ "$n" -le "$(nproc)" ] || share=(--mca mpi_yield_when_idle 1)
    REC_DIST_NETNS="$name" "$root/scripts/netns-cluster.sh" exec "$name" 1 "$root/launch.sh" -np "$n" \
        --hostfile "$hostfile" --bind-to none "${share[@]}" --mca plm_rsh_agent "$root/scripts/netns-rsh" \
        --mca btl tcp,self --mca btl_tcp_if_include 198.18.0.0/24 --mca oob_tcp_if_include 198.18.0.0/24 \
        -- "$@"
}

for rate in "${rates[@]}"; do
    "$root/scripts/netns-cluster.sh" shape "$name" "$rate"
    for n in $(seq 2 "$hosts"); do
        echo "== $rate, $n ranks"
        run "$n" bench --network --json-out "$out/net-$rate-$n.json"
        run "$n" bench --case dlrm:1024 --case dlrm:1024:row --case dlrm:128 --case dlrm:128:row \
            --windows 5 --no-compare-single-rank --json-out "$out/bench-$rate-$n.json"
    done
done

{
    for rate in "${rates[@]}"; do
        echo "## $rate"
        echo
        echo '```'
        python3 "$root/scripts/scaling_model.py" fit "$out"/net-"$rate"-*.json
        echo '```'
        echo
        python3 "$root/scripts/scaling_model.py" validate --net "$out"/net-"$rate"-*.json --bench "$out"/bench-"$rate"-*.json
        python3 "$root/scripts/scaling_model.py" predict --net "$out"/net-"$rate"-*.json --bench "$out/bench-$rate-2.json"
        echo
    done
} | tee "$out/model.md"
