#!/usr/bin/env bash
# rec-dist's one entry point: set-up, build, local and hostfile launches, tests.
#
#   ./launch.sh                          set up, build, make the default dataset, train it on 2 ranks
#   ./launch.sh setup                    install the system packages rec-dist needs (Debian, as root)
#   ./launch.sh build                    swift build -c release
#   ./launch.sh test                     set up, build, run the whole test suite
#   ./launch.sh -np N [--hostfile F] [--dry-run] -- train ARGS...
#                                        run `rec-dist ARGS...` on N MPI ranks
#
# Environment: REC_DIST_BIN overrides the binary; DEFAULT_ROWS the default dataset's size.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bin="${REC_DIST_BIN:-$here/.build/release/rec-dist}"
packages=(libopenmpi-dev openmpi-bin libopenblas-dev pkg-config)

say() { printf '%s\n' "$*" >&2; }
die() { say "launch.sh: $*"; exit 2; }

setup() {
    local missing=()
    for p in "${packages[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -eq 0 ]; then return 0; fi
    say "installing ${missing[*]}"
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || die "need root (or sudo) to install ${missing[*]}"
        sudo="sudo"
    fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

build() {
    command -v swift >/dev/null || die "swift is not on PATH; install Swift 6 (https://www.swift.org/install/linux/)"
    (cd "$here" && swift build -c release)
}

# The mpirun command line for N ranks on this machine (or on a hostfile's hosts).
mpirun_args() {
    local np="$1" hostfile="$2"
    local args=(mpirun -np "$np")
    [ "$(id -u)" -eq 0 ] && args+=(--allow-run-as-root)
    if [ -n "$hostfile" ]; then
        [ -r "$hostfile" ] || die "cannot read hostfile '$hostfile'"
        args+=(--hostfile "$hostfile")
    fi
    local cores
    cores="$(nproc)"
    if [ -z "$hostfile" ] && [ "$np" -gt "$cores" ]; then
        # More ranks than cores: allow it, and don't pin ranks that must share cores.
        args+=(--oversubscribe --bind-to none)
    fi
    # One OpenBLAS thread per rank: ranks already fill the cores.
    args+=(-x OPENBLAS_NUM_THREADS=1 -x OMP_NUM_THREADS=1)

    printf '%s\n' "${args[@]}"
}

run_ranks() {
    local np="" hostfile="" dry=0
    while [ $# -gt 0 ]; do
        case "$1" in
            -np|--np) np="${2:-}"; shift 2 ;;
            --hostfile) hostfile="${2:-}"; shift 2 ;;
            --dry-run) dry=1; shift ;;
            --) shift; break ;;
            *) die "unknown option '$1' (usage: ./launch.sh -np N [--hostfile F] [--dry-run] -- train ARGS...)" ;;
        esac
    done
    [[ "$np" =~ ^[1-9][0-9]*$ ]] || die "-np needs a positive number of ranks (got '${np}')"
    [ $# -gt 0 ] || die "nothing to run: give rec-dist's arguments after --, e.g. -- train --data FILE"
    local cmd=()
    mapfile -t cmd < <(mpirun_args "$np" "$hostfile")
    cmd+=("$bin" "$@")
    if [ "$dry" -eq 1 ]; then printf '%q ' "${cmd[@]}"; echo; return 0; fi
    [ -x "$bin" ] || build
    # SIGTERM (a scheduler's time limit, kill) and SIGINT (Ctrl-C) become SIGUSR1 for mpirun,
    # which forwards it to every rank: they stop at the next step and rank 0 writes a checkpoint
    # (exit status 75). mpirun would turn a SIGTERM or SIGINT of its own into a kill of the ranks
    # a second later, so it runs in its own session, out of reach of the terminal's Ctrl-C.
    setsid "${cmd[@]}" < /dev/null &
    local pid=$! status=0
    trap 'kill -USR1 "$pid" 2>/dev/null' TERM INT
    while true; do
        wait "$pid" && status=0 || status=$?
        kill -0 "$pid" 2>/dev/null || break
    done
    trap - TERM INT
    return "$status"
}

default_run() {
    setup
    build
    local data="$here/data/synth-1m.tsv" rows="${DEFAULT_ROWS:-1000000}"
    if [ ! -s "$data" ]; then
        mkdir -p "$here/data"
        "$bin" synth --rows "$rows" --out "$data"
    fi
    local out="$here/runs/default"
    mkdir -p "$out"
    run_ranks -np 2 -- train --data "$data" --model mlp --epochs 1 \
        --metrics-out "$out/metrics.jsonl" --checkpoint-dir "$out/checkpoints"
}

run_tests() {
    setup
    cd "$here"
    command -v swift >/dev/null || die "swift is not on PATH; install Swift 6 (https://www.swift.org/install/linux/)"
    # Release, because the end-to-end tests train real models; -enable-testing for @testable
    # imports. The integration tests run the rec-dist binary this builds beside the test bundle.
    swift test -c release -Xswiftc -enable-testing "$@"
}

case "${1:-}" in
    "") default_run ;;
    setup) setup ;;
    build) setup; build ;;
    test) shift; run_tests "$@" ;;
    -np|--np|--hostfile|--dry-run) run_ranks "$@" ;;
    -h|--help|help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" ;;
    *) die "unknown command '$1'; see ./launch.sh --help" ;;
esac
