#!/usr/bin/env bash
# rec-dist's one entry point: set-up, build, local, hostfile and Slurm launches, tests.
#
#   ./launch.sh                          set up, build, make the default dataset, train it on 2 ranks
#   ./launch.sh setup                    install the system packages rec-dist needs (Debian, as root)
#   ./launch.sh build                    swift build -c release
#   ./launch.sh test                     set up, build, run the whole test suite
#   ./launch.sh -np N [--hostfile F] [--bind-to P] [--map-by P] [--mca NAME VALUE]... [-x VAR]...
#               [--dry-run] -- train ARGS...
#                                        run `rec-dist ARGS...` on N MPI ranks, here or on a
#                                        hostfile's hosts (mapped by slot, bound to cores)
#   ./launch.sh --slurm --nodes K --ntasks-per-node M --time HH:MM:SS [--partition P] [--account A]
#               [--job-name NAME] [--output-dir DIR] [--signal-lead S] [--no-requeue] [--dry-run]
#               -- train ARGS...
#                                        write a Slurm batch script (srun --mpi=pmix, checkpoint
#                                        and requeue before the time limit, --auto-resume) and
#                                        submit it with sbatch; prints the job id (--dry-run: the script)
#
# Environment: REC_DIST_BIN overrides the binary; DEFAULT_ROWS the default dataset's size.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bin="${REC_DIST_BIN:-$here/.build/release/rec-dist}"
packages=(libopenmpi-dev openmpi-bin libopenblas-dev pkg-config)
# The tests' Python environment (scripts/requirements-test.txt), never the system Python's.
venv="$here/.venv"

say() { printf '%s\n' "$*" >&2; }
die() { say "launch.sh: $*"; exit 2; }

# Installs the Debian packages named in the arguments (default: what rec-dist needs) that are missing.
setup() {
    local missing=() wanted=("$@")
    [ $# -gt 0 ] || wanted=("${packages[@]}")
    for p in "${wanted[@]}"; do
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

# Options of the -np mode, filled by run_ranks.
user_bind="" user_map="" user_mca=() user_exports=()

# The mpirun command line for N ranks on this machine (or on a hostfile's hosts), one word a line.
mpirun_args() {
    local np="$1" hostfile="$2"
    local args=(mpirun -np "$np")
    [ "$(id -u)" -eq 0 ] && args+=(--allow-run-as-root)
    # MCA parameters: the launcher's defaults, then the user's --mca (which replace a default).
    local -A mca=()
    local order=()
    if [ -n "$hostfile" ]; then
        [ -r "$hostfile" ] || die "cannot read hostfile '$hostfile'"
        args+=(--hostfile "$hostfile")
        # Consecutive ranks share a host (fill each host's slots in turn), one rank per core.
        args+=(--map-by "${user_map:-slot}" --bind-to "${user_bind:-core}")
        # A host that drops off the network would otherwise leave the job hanging for many minutes
        # (Linux's TCP retransmission timeout): probe the launcher's idle connections to the remote
        # daemons after 5 s of silence, every 1 s, and give up after 3 unanswered probes, so
        # mpirun ends the job about 10 s after a host is cut off.
        mca[oob_tcp_keepalive_time]=5; mca[oob_tcp_keepalive_intvl]=1; mca[oob_tcp_keepalive_probes]=3
        order+=(oob_tcp_keepalive_time oob_tcp_keepalive_intvl oob_tcp_keepalive_probes)
    else
        local cores
        cores="$(nproc)"
        if [ "$np" -gt "$cores" ]; then
            # More ranks than cores: allow it, and don't pin ranks that must share cores.
            args+=(--oversubscribe --bind-to "${user_bind:-none}")
        elif [ -n "$user_bind" ]; then
            args+=(--bind-to "$user_bind")
        fi
        [ -n "$user_map" ] && args+=(--map-by "$user_map")
    fi
    local i
    for ((i = 0; i < ${#user_mca[@]}; i += 2)); do
        [ -n "${mca[${user_mca[i]}]+set}" ] || order+=("${user_mca[i]}")
        mca[${user_mca[i]}]="${user_mca[i + 1]}"
    done
    local name
    for name in "${order[@]}"; do args+=(--mca "$name" "${mca[$name]}"); done
    # One OpenBLAS thread per rank: ranks already fill the cores. Remote ranks get these (and the
    # library path, when set) from mpirun; they inherit nothing else from this shell.
    args+=(-x OPENBLAS_NUM_THREADS=1 -x OMP_NUM_THREADS=1)
    if [ -n "$hostfile" ] && [ -n "${LD_LIBRARY_PATH:-}" ]; then args+=(-x LD_LIBRARY_PATH); fi
    for name in "${user_exports[@]}"; do args+=(-x "$name"); done
    printf '%s\n' "${args[@]}"
}

ranks_usage="usage: ./launch.sh -np N [--hostfile F] [--bind-to P] [--map-by P] [--mca NAME VALUE]... [-x VAR[=VALUE]]... [--dry-run] -- train ARGS..."

run_ranks() {
    local np="" hostfile="" dry=0
    while [ $# -gt 0 ]; do
        case "$1" in
            -np|--np) np="${2:-}"; shift 2 ;;
            --hostfile) hostfile="${2:-}"; shift 2 ;;
            --bind-to) user_bind="${2:?--bind-to needs a policy: core, none, ...}"; shift 2 ;;
            --map-by) user_map="${2:?--map-by needs a policy: slot, node, ...}"; shift 2 ;;
            --mca) [ $# -ge 3 ] || die "--mca needs a name and a value"; user_mca+=("$2" "$3"); shift 3 ;;
            -x) user_exports+=("${2:?-x needs an environment variable: VAR or VAR=VALUE}"); shift 2 ;;
            --dry-run) dry=1; shift ;;
            --) shift; break ;;
            *) die "unknown option '$1' ($ranks_usage)" ;;
        esac
    done
    [[ "$np" =~ ^[1-9][0-9]*$ ]] || die "-np needs a positive number of ranks (got '${np}')"
    [ $# -gt 0 ] || die "nothing to run: give rec-dist's arguments after --, e.g. -- train --data FILE"
    local cmd=()
    mapfile -t cmd < <(mpirun_args "$np" "$hostfile")
    [ ${#cmd[@]} -gt 0 ] || exit 2
    cmd+=("$bin" "$@")
    if [ "$dry" -eq 1 ]; then printf '%q ' "${cmd[@]}"; echo; return 0; fi
    [ -x "$bin" ] || build
    # SIGTERM (a scheduler's time limit, kill) becomes SIGUSR1 and SIGINT (Ctrl-C) SIGUSR2 for
    # mpirun, which forwards them to every rank: they stop at the next step and rank 0 writes a
    # checkpoint (exit status 75). mpirun would turn a SIGTERM or SIGINT of its own into a kill of
    # the ranks a second later, so it runs in its own session, out of reach of the terminal's
    # Ctrl-C. REC_DIST_SIGNAL_RELAY tells the ranks to name the signal launch.sh received.
    # Whether a person watches this launch (the ranks cannot tell: Open MPI gives each one a
    # pseudo-terminal even when mpirun's output goes to a file): train's progress bar or lines.
    local terminal=0
    [ -t 1 ] && terminal=1
    cmd=("${cmd[0]}" -x REC_DIST_TERMINAL -x REC_DIST_SIGNAL_RELAY "${cmd[@]:1}")
    REC_DIST_TERMINAL="${REC_DIST_TERMINAL:-$terminal}" REC_DIST_SIGNAL_RELAY=launch.sh setsid "${cmd[@]}" < /dev/null &
    local pid=$! status=0
    trap 'kill -USR1 "$pid" 2>/dev/null' TERM
    trap 'kill -USR2 "$pid" 2>/dev/null' INT
    while true; do
        wait "$pid" && status=0 || status=$?
        kill -0 "$pid" 2>/dev/null || break
    done
    trap - TERM INT
    return "$status"
}

# Seconds in a Slurm time limit: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS.
slurm_seconds() {
    local t="$1" days=0 h=0 m=0 s=0
    if [[ "$t" =~ ^([0-9]+)-([0-9]+)(:([0-9]+))?(:([0-9]+))?$ ]]; then
        days=${BASH_REMATCH[1]}; h=${BASH_REMATCH[2]}; m=${BASH_REMATCH[4]:-0}; s=${BASH_REMATCH[6]:-0}
    elif [[ "$t" =~ ^([0-9]+):([0-9]+):([0-9]+)$ ]]; then
        h=${BASH_REMATCH[1]}; m=${BASH_REMATCH[2]}; s=${BASH_REMATCH[3]}
    elif [[ "$t" =~ ^([0-9]+):([0-9]+)$ ]]; then
        m=${BASH_REMATCH[1]}; s=${BASH_REMATCH[2]}
    elif [[ "$t" =~ ^([0-9]+)$ ]]; then
        m=${BASH_REMATCH[1]}
    else
        return 1
    fi
    echo $(( ((10#$days * 24 + 10#$h) * 60 + 10#$m) * 60 + 10#$s ))
}

has_arg() { local want="$1" a; shift; for a in "$@"; do [ "$a" = "$want" ] || [[ "$a" == "$want="* ]] && return 0; done; return 1; }

slurm_usage="usage: ./launch.sh --slurm --nodes K --ntasks-per-node M --time HH:MM:SS [--partition P] [--account A] [--job-name NAME] [--output-dir DIR] [--signal-lead SECONDS] [--no-requeue] [--dry-run] -- train ARGS..."

# Writes a Slurm batch script for `rec-dist ARGS` on K nodes x M ranks and submits it with sbatch
# (or prints it, with --dry-run). The job:
#  - starts the ranks with `srun --mpi=pmix` (Debian's Open MPI speaks PMIx to Slurm; pmi2 fails);
#    a rank that fails ends the step (--kill-on-bad-exit), and srun's status is the job's, so a
#    failed run ends FAILED with its exit code;
#  - writes DIR/NAME-JOBID.out and .err (appending across restarts);
#  - gets SIGUSR1 --signal-lead seconds before its time limit: the script sends SIGTERM to the
#    ranks (scancel --signal=TERM), rank 0 writes a checkpoint and rec-dist exits 75, and the script requeues the job;
#  - trains with --auto-resume (and a per-job --checkpoint-dir unless given), so a requeued job,
#    after a time limit or a node failure (--requeue), continues from its newest checkpoint.
run_slurm() {
    local nodes="" per_node="" time="" partition="" account="" name="rec-dist" outdir="$here/runs/slurm"
    local lead="" requeue=1 dry=0
    while [ $# -gt 0 ]; do
        case "$1" in
            --nodes) nodes="${2:-}"; shift 2 ;;
            --ntasks-per-node) per_node="${2:-}"; shift 2 ;;
            --time) time="${2:-}"; shift 2 ;;
            --partition) partition="${2:-}"; shift 2 ;;
            --account) account="${2:-}"; shift 2 ;;
            --job-name) name="${2:-}"; shift 2 ;;
            --output-dir) outdir="${2:-}"; shift 2 ;;
            --signal-lead) lead="${2:-}"; shift 2 ;;
            --no-requeue) requeue=0; shift ;;
            --dry-run) dry=1; shift ;;
            --) shift; break ;;
            *) die "unknown option '$1' ($slurm_usage)" ;;
        esac
    done
    [[ "$nodes" =~ ^[1-9][0-9]*$ ]] || die "--nodes needs a positive number of nodes (got '$nodes'; $slurm_usage)"
    [[ "$per_node" =~ ^[1-9][0-9]*$ ]] || die "--ntasks-per-node needs a positive number of ranks per node (got '$per_node')"
    local limit
    limit="$(slurm_seconds "$time")" && [ "$limit" -gt 0 ] \
        || die "--time needs a time limit such as 01:30:00 (HH:MM:SS, or D-HH:MM:SS) (got '$time')"
    [[ "$name" =~ ^[A-Za-z0-9_.+-]+$ ]] || die "--job-name may use letters, digits and _ . + - (got '$name')"
    local word
    for word in "$partition" "$account"; do
        [[ "$word" =~ ^[A-Za-z0-9_.,+-]*$ ]] || die "--partition and --account take Slurm names (got '$word')"
    done
    # The signal comes this long before the limit: 2 minutes, or a quarter of a short limit.
    if [ -z "$lead" ]; then lead=$(( limit >= 480 ? 120 : (limit / 4 > 0 ? limit / 4 : 1) )); fi
    [[ "$lead" =~ ^[1-9][0-9]*$ ]] && [ "$lead" -lt "$limit" ] \
        || die "--signal-lead needs a number of seconds below the time limit ($limit s) (got '$lead')"
    [ $# -gt 0 ] || die "nothing to run: give rec-dist's arguments after --, e.g. -- train --data FILE"
    [[ "$outdir" = /* ]] || outdir="$PWD/$outdir"

    # rec-dist's arguments, quoted for the script; a training run resumes where a previous start
    # of the same job stopped.
    local args
    args="$(printf ' %q' "$bin" "$@")"
    if [ "$1" = "train" ]; then
        if ! has_arg --checkpoint-dir "$@"; then
            args+=" --checkpoint-dir $(printf '%q' "$outdir")/$name-\"\$SLURM_JOB_ID\"-checkpoints"
        fi
        if ! has_arg --auto-resume "$@" && ! has_arg --resume "$@"; then args+=" --auto-resume"; fi
    fi

    local directives=(
        "--job-name=$name" "--nodes=$nodes" "--ntasks-per-node=$per_node" "--time=$time"
    )
    [ -n "$partition" ] && directives+=("--partition=$partition")
    [ -n "$account" ] && directives+=("--account=$account")
    # #SBATCH lines are not shell: their paths cannot be quoted.
    [[ "$PWD$outdir" =~ [[:space:]] ]] && die "the working directory and --output-dir may not contain spaces in a Slurm job ('$PWD', '$outdir')"
    directives+=(
        "--chdir=$PWD"
        "--output=$outdir/%x-%j.out"
        "--error=$outdir/%x-%j.err"
        "--open-mode=append"
        "--signal=B:USR1@$lead"
    )
    if [ "$requeue" -eq 1 ]; then directives+=(--requeue); else directives+=(--no-requeue); fi

    local script d
    script="#!/bin/bash
# rec-dist on $nodes node(s) x $per_node rank(s), written by launch.sh --slurm on $(date -u +%Y-%m-%dT%H:%M:%SZ)."
    for d in "${directives[@]}"; do script+=$'\n'"#SBATCH $d"; done
    script+=$'\n'"$(cat <<EOF
set -u
# One OpenBLAS thread per rank: Slurm gives each rank a core.
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
echo "\$(date -u +%FT%TZ) job \$SLURM_JOB_ID (start \$((\${SLURM_RESTART_COUNT:-0} + 1))) on \$SLURM_JOB_NODELIST: \$SLURM_NTASKS rank(s)"

# $lead s before the time limit Slurm sends this script SIGUSR1: ask the ranks to stop (SIGTERM: rank 0
# writes a checkpoint and rec-dist exits 75)$( [ "$requeue" -eq 1 ] && echo ", then requeue the job so that it resumes" ).
near_limit=0
# (Not \`kill -TERM \$step\`: srun answers SIGTERM by killing the step at once.)
trap 'near_limit=1; echo "\$(date -u +%FT%TZ) time limit near: asking rec-dist to checkpoint and stop"; scancel --signal=TERM "\$SLURM_JOB_ID"' USR1

# PMIx: Debian's Open MPI speaks it to Slurm (--mpi=pmi2 does not work). One failed rank ends the step.
srun --mpi=pmix --kill-on-bad-exit=1$args &
step=\$!
while :; do
    wait "\$step"; status=\$?
    kill -0 "\$step" 2>/dev/null || break    # wait returned for the signal: the step still runs
done
EOF
)"
    if [ "$requeue" -eq 1 ]; then
        script+=$'\n'"$(cat <<'EOF'
if [ "$status" -eq 75 ] && [ "$near_limit" -eq 1 ]; then
    echo "$(date -u +%FT%TZ) checkpoint written; requeueing job $SLURM_JOB_ID to continue with --auto-resume"
    scontrol requeue "$SLURM_JOB_ID" && exit 0
    echo "scontrol requeue failed: resubmit this script to continue" >&2
fi
EOF
)"
    fi
    script+=$'\n'"$(cat <<'EOF'
echo "$(date -u +%FT%TZ) rec-dist exited with status $status"
exit "$status"
EOF
)"
    if [ "$dry" -eq 1 ]; then printf '%s\n' "$script"; return 0; fi

    command -v sbatch >/dev/null || die "sbatch is not on PATH: run this on a Slurm login node (or install slurm-client); --dry-run prints the script"
    [ -x "$bin" ] || build
    mkdir -p "$outdir" || die "cannot create --output-dir '$outdir'"
    local file
    file="$outdir/$name-$(date -u +%Y%m%d-%H%M%S)-$$.sbatch"
    printf '%s\n' "$script" >"$file"
    local out
    out="$(sbatch --parsable "$file")" || die "sbatch refused $file (see its message above)"
    local job="${out%%;*}"
    say "submitted job $job: $file; output $outdir/$name-$job.out, errors $outdir/$name-$job.err"
    echo "$job"
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

# The tests' Python: a virtual environment in .venv (never the system Python) with the packages of
# scripts/requirements-test.txt, installed again only when that file changes.
python_env() {
    local requirements="$here/scripts/requirements-test.txt" stamp="$venv/.requirements"
    if [ -x "$venv/bin/python3" ] && cmp -s "$requirements" "$stamp"; then return 0; fi
    if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
        command -v python3 >/dev/null && say "python3 has no venv module: installing python3-venv"
        setup python3 python3-venv
    fi
    say "creating $venv with $(tr '\n' ' ' < "$requirements")(pip; takes about a minute the first time)"
    python3 -m venv "$venv" || die "python3 -m venv $venv failed"
    "$venv/bin/python3" -m pip install --quiet --disable-pip-version-check -r "$requirements" \
        || die "pip could not install scripts/requirements-test.txt into $venv"
    cp "$requirements" "$stamp"
}

run_tests() {
    setup
    command -v chromium >/dev/null || command -v chromium-browser >/dev/null || setup chromium
    python_env
    cd "$here"
    # The cluster tests' system packages: a real Slurm with munge, and iproute2 for the namespace
    # hosts. Installing takes root; without it those tests are skipped (never in CI, which is root).
    if [ "$(id -u)" -eq 0 ]; then
        "$here/scripts/slurm-local.sh" install
        "$here/scripts/netns-cluster.sh" install
    fi
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
    --slurm) shift; run_slurm "$@" ;;
    -np|--np|--hostfile|--dry-run|--bind-to|--map-by|--mca|-x) run_ranks "$@" ;;
    -h|--help|help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" ;;
    *) die "unknown command '$1'; see ./launch.sh --help" ;;
esac
