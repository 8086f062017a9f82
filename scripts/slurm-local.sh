#!/usr/bin/env bash
# A real one-node Slurm cluster on this machine, for tests and for trying `./launch.sh --slurm`.
#
#   scripts/slurm-local.sh install          install slurmd, slurmctld, slurm-client, munge (Debian, root)
#   scripts/slurm-local.sh start [DIR]      install if missing, write DIR/slurm.conf, start munged,
#                                           slurmctld and slurmd, wait until the node is idle;
#                                           prints DIR (default: a new temporary directory)
#   scripts/slurm-local.sh stop DIR         cancel DIR's jobs, stop its daemons by PID, remove nothing
#   scripts/slurm-local.sh env DIR          print `export SLURM_CONF=DIR/slurm.conf`
#
# Nothing under /etc is written: everything (configuration, munge key and socket, state, spool, logs,
# PID files) lives in DIR, and Slurm's commands find it through SLURM_CONF=DIR/slurm.conf. The daemons
# listen on loopback ports picked at random among the free ones. Run as root (slurmd starts job steps
# as the submitting user, and munged must own its key).
#
#   dir=$(scripts/slurm-local.sh start) && export SLURM_CONF=$dir/slurm.conf
#   ./launch.sh --slurm --nodes 1 --ntasks-per-node 2 --time 00:10:00 -- train --data ...
#   scripts/slurm-local.sh stop "$dir"
set -euo pipefail

say() { printf 'slurm-local: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

packages=(slurmd slurmctld slurm-client munge)

install() {
    local missing=() p
    for p in "${packages[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$(id -u)" -eq 0 ] || die "installing ${missing[*]} needs root"
    say "installing ${missing[*]}"
    # The packages' maintainer scripts would start munge and the Slurm daemons with /etc's
    # configuration; keep them from starting anything (the usual policy-rc.d of container images).
    local policy=/usr/sbin/policy-rc.d added=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && added=1
    fi
    local rc=0
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        -o DPkg::Lock::Timeout=300 "${missing[@]}"; } >/tmp/slurm-local-apt.log 2>&1 || rc=$?
    [ "$added" -eq 1 ] && rm -f "$policy"
    [ "$rc" -eq 0 ] || { tail -20 /tmp/slurm-local-apt.log >&2; die "apt-get install ${missing[*]} failed"; }
}

# A TCP port on 127.0.0.1 that nothing listens on.
free_port() {
    local port tries=0
    while [ $tries -lt 200 ]; do
        port=$((20000 + RANDOM % 20000))
        tries=$((tries + 1))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "$port"; return 0; fi
    done
    die "no free port found"
}

# Alive and not a zombie (an exited daemon waits for its reaper for a moment).
running() { kill -0 "$1" 2>/dev/null && ! grep -q '^[^)]*) Z' "/proc/$1/stat" 2>/dev/null; }
pid_alive() { [ -s "$1" ] && running "$(cat "$1")"; }

# Runs a daemon with no file descriptor of ours but 0-2: a caller's descriptor left open in a
# daemon keeps it waiting (Foundation's Process, for one, sees its child end only when every copy
# of a socket it handed down is closed).
daemon() {
    (
        for fd in /proc/self/fd/*; do
            fd="${fd##*/}"
            [ "$fd" -gt 2 ] 2>/dev/null && eval "exec $fd>&-" 2>/dev/null
        done
        # Nor a blocked signal: a caller's mask (a test runner's thread) would leave the daemon
        # deaf to stop's SIGTERM. perl-base is essential on Debian.
        if command -v perl >/dev/null; then
            exec perl -MPOSIX -e 'sigprocmask(SIG_SETMASK, POSIX::SigSet->new) or die "sigprocmask: $!"; exec @ARGV or die "$ARGV[0]: $!"' "$@" </dev/null
        fi
        exec "$@" </dev/null
    )
}

wait_for() { # seconds description command...
    local limit="$1" what="$2"; shift 2
    local deadline=$((SECONDS + limit))
    until "$@"; do
        [ $SECONDS -lt $deadline ] || return 1
        sleep 0.2
    done
}

start() {
    install
    [ "$(id -u)" -eq 0 ] || die "start needs root"
    local dir="${1:-}"
    if [ -z "$dir" ]; then dir="$(mktemp -d /tmp/slurm-local.XXXXXX)"; fi
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    chmod 755 "$dir"
    mkdir -p "$dir/munge" "$dir/state" "$dir/spool" "$dir/log" "$dir/tmp"
    chmod 1777 "$dir/tmp"
    chmod 711 "$dir/munge"   # munged wants its socket directory searchable by all

    # munge: its own key, socket, PID, seed and log, all in DIR/munge.
    local m="$dir/munge"
    if [ ! -s "$m/munge.key" ]; then
        dd if=/dev/urandom of="$m/munge.key" bs=1024 count=1 status=none
        chmod 400 "$m/munge.key"
    fi
    daemon munged --force --socket="$m/munge.socket" --key-file="$m/munge.key" --pid-file="$m/munged.pid" \
        --seed-file="$m/munged.seed" --log-file="$m/munged.log" \
        || { cat "$m/munged.log" >&2 2>/dev/null; die "munged did not start (log above)"; }
    wait_for 10 "munged" test -S "$m/munge.socket" || die "munged's socket $m/munge.socket did not appear"

    # slurm.conf: one node, this machine as `slurmd -C` sees it, on loopback.
    local host node ctl_port d_port
    host="$(uname -n)"; host="${host%%.*}"
    node="$(slurmd -C | head -1 | sed -e 's/ RealMemory=[0-9]*//')"
    ctl_port="$(free_port)"
    d_port="$(free_port)"
    while [ "$d_port" = "$ctl_port" ]; do d_port="$(free_port)"; done
    cat >"$dir/slurm.conf" <<EOF
# Written by scripts/slurm-local.sh: a one-node test cluster whose files all live in $dir.
ClusterName=recdist-local
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctl_port
SlurmdPort=$d_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire also bounds how long a requeued job waits before it may start again (default 120 s).
AuthInfo=socket=$m/munge.socket,cred_expire=10
StateSaveLocation=$dir/state
# The PMIx plugin's per-step directories (spmix_appdir_UID_JOB.STEP) go under TmpFS: the default
# /tmp would be shared by every local cluster, whose job ids all start at 1.
TmpFS=$dir/tmp
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
PlugStackConfig=$dir/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
InactiveLimit=0
KillWait=5
MinJobAge=600
$node State=UNKNOWN NodeAddr=127.0.0.1
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    : >"$dir/plugstack.conf"
    export SLURM_CONF="$dir/slurm.conf"

    daemon slurmctld -c -f "$SLURM_CONF" \
        || { tail -20 "$dir/log/slurmctld.log" >&2 2>/dev/null; die "slurmctld did not start (log above)"; }
    wait_for 15 "slurmctld" pid_alive "$dir/slurmctld.pid" \
        || { tail -20 "$dir/log/slurmctld.log" >&2; die "slurmctld did not stay up (log above)"; }
    daemon slurmd -f "$SLURM_CONF" -N "$host" \
        || { tail -20 "$dir/log/slurmd.log" >&2 2>/dev/null; die "slurmd did not start (log above)"; }

    node_idle() { [ "$(sinfo -h -n "$host" -o %T 2>/dev/null)" = "idle" ]; }
    if ! wait_for 30 "node idle" node_idle; then
        sinfo -N -l >&2 || true
        tail -20 "$dir/log/slurmctld.log" "$dir/log/slurmd.log" >&2 || true
        stop "$dir"
        die "node $host did not become idle within 30 s"
    fi
    say "one-node cluster up in $dir (node $host, slurmctld port $ctl_port, slurmd port $d_port)"
    echo "$dir"
}

# Stops one daemon by its PID file: TERM, then KILL after `limit` seconds.
stop_pid() {
    local file="$1" name="$2" limit="${3:-10}"
    [ -s "$file" ] || return 0
    local pid
    pid="$(cat "$file")"
    running "$pid" || return 0
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + limit))
    while running "$pid" && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
    if running "$pid"; then
        say "$name (pid $pid) ignored TERM; killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
}

stop() {
    local dir="${1:-}"
    [ -n "$dir" ] && [ -f "$dir/slurm.conf" ] || die "usage: $0 stop DIR (the directory start printed)"
    export SLURM_CONF="$dir/slurm.conf"
    if pid_alive "$dir/slurmctld.pid"; then
        # Cancel what is left, so that no job step outlives the daemons.
        local jobs
        jobs="$(squeue -h -o %i 2>/dev/null || true)"
        if [ -n "$jobs" ]; then
            # shellcheck disable=SC2086
            scancel $jobs 2>/dev/null || true
            local deadline=$((SECONDS + 20))
            while [ -n "$(squeue -h -o %i 2>/dev/null || true)" ] && [ $SECONDS -lt $deadline ]; do sleep 0.3; done
        fi
    fi
    stop_pid "$dir/slurmd.pid" slurmd
    stop_pid "$dir/slurmctld.pid" slurmctld
    stop_pid "$dir/munge/munged.pid" munged
    say "stopped the cluster in $dir"
}

case "${1:-}" in
    install) install ;;
    start) shift; start "${1:-}" ;;
    stop) shift; stop "${1:-}" ;;
    env) shift; echo "export SLURM_CONF=${1:?usage: $0 env DIR}/slurm.conf" ;;
    *) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 2 ;;
esac
