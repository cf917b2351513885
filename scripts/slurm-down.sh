#!/usr/bin/env bash
# Stops the daemons scripts/slurm-up.sh started, and only those (by the PIDs it recorded).
#
#   bash scripts/slurm-down.sh           # stop; keep state, so job ids keep counting
#   bash scripts/slurm-down.sh --purge   # stop and delete $SLURM_TEST_DIR
set -uo pipefail

DIR=${SLURM_TEST_DIR:-/tmp/jobctl-slurm}
say() { printf 'slurm-down: %s\n' "$*" >&2; }

stop() { # stop NAME: SIGTERM the recorded pid, wait up to 10 s, then SIGKILL
    local f="$DIR/run/$1.pid" pid i
    [ -s "$f" ] || return 0
    pid=$(cat "$f")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null
        for ((i = 0; i < 100; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            say "$1 (pid $pid) ignored SIGTERM; killing it"
            kill -KILL "$pid" 2>/dev/null
        fi
        say "stopped $1 (pid $pid)"
    fi
    rm -f "$f"
}

# Reverse order of start-up: the REST daemon first, munged last. Stopping slurmd and slurmctld
# in parallel halves the wait (each takes about 2 s to exit).
stop slurmrestd
stop slurmd &
stop slurmctld &
wait
stop munged

if [ "${1:-}" = "--purge" ]; then
    rm -rf "$DIR"
    say "removed $DIR"
fi
exit 0
