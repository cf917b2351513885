#!/usr/bin/env bash
# Brings up a throw-away single-node Slurm (munged, slurmctld, slurmd, slurmrestd) on loopback
# for jobctl's Slurm integration tests, and writes an env file the tests read.
#
#   bash scripts/slurm-up.sh            # idempotent: starts only what is not running yet
#
# Environment:
#   SLURM_TEST_DIR   where config, state, logs, pid files and the env file go
#                    (default /tmp/jobctl-slurm)
#   SLURM_REST_PORT  slurmrestd's TCP port on 127.0.0.1 (default 6820)
#
# Writes $SLURM_TEST_DIR/slurm.env with SLURM_REST_URL, SLURM_USER_NAME, SLURM_JWT and
# SLURM_CONF, and records the PID of every daemon it started in $SLURM_TEST_DIR/run/*.pid so
# scripts/slurm-down.sh stops exactly those. Needs root (package install, daemons that switch
# users) and Debian 12's Slurm 22.05 packages (REST API v0.0.36-v0.0.38).
# Exit status: 0 ready, 1 failed (the reason and log tails are printed), 2 not possible here.
set -euo pipefail

DIR=${SLURM_TEST_DIR:-/tmp/jobctl-slurm}
PORT=${SLURM_REST_PORT:-6820}
JOB_USER=slurmci
PACKAGES=(munge slurmctld slurmd slurmrestd slurm-client slurm-wlm-basic-plugins slurm-wlm-jwt-plugin)

say() { printf 'slurm-up: %s\n' "$*" >&2; }
die() {
    say "FAILED: $*"
    for f in "$DIR"/log/*.log; do
        [ -f "$f" ] || continue
        say "--- last lines of $f"
        tail -n 15 "$f" >&2 || true
    done
    exit 1
}

if [ "$(id -u)" != 0 ]; then
    say "needs root (installs packages, starts daemons that switch users); not starting Slurm"
    exit 2
fi

# --- packages -------------------------------------------------------------------------------
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    command -v apt-get >/dev/null || { say "packages missing (${missing[*]}) and no apt-get"; exit 2; }
    say "installing ${missing[*]}"
    # Without a policy-rc.d that says no, the packages' postinst would start the daemons with
    # the distribution's configuration; we start them ourselves below.
    own_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        own_policy=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    ok=1
    apt-get update -qq >/dev/null 2>&1 || ok=0
    if [ $ok = 1 ]; then
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >"${TMPDIR:-/tmp}/slurm-up-apt.log" 2>&1 || ok=0
    fi
    [ $own_policy = 1 ] && rm -f /usr/sbin/policy-rc.d
    if [ $ok = 0 ]; then
        say "apt-get could not install the packages (see ${TMPDIR:-/tmp}/slurm-up-apt.log)"
        exit 2
    fi
fi

# Daemons inherit the working directory; slurmrestd even uses it as the default working
# directory of jobs submitted without one. Keep them off the caller's checkout.
cd /

# --- layout and configuration ---------------------------------------------------------------
id -u "$JOB_USER" >/dev/null 2>&1 || useradd --system --no-create-home --shell /bin/sh "$JOB_USER"
mkdir -p "$DIR"/{etc,state,spool,run,log,jobs}
chmod 755 "$DIR" "$DIR/etc" "$DIR/log"
chown slurm:slurm "$DIR/state"
# Job output lands here; the job user writes it, the tests (root) read it.
chown "$JOB_USER" "$DIR/jobs"
chmod 1777 "$DIR/jobs"

if [ ! -s "$DIR/etc/jwt_hs256.key" ]; then
    head -c 32 /dev/urandom >"$DIR/etc/jwt_hs256.key"
fi
chown slurm:slurm "$DIR/etc/jwt_hs256.key"
chmod 600 "$DIR/etc/jwt_hs256.key"

CONF="$DIR/etc/slurm.conf"
export SLURM_CONF="$CONF"
mem=$(/usr/sbin/slurmd -C 2>/dev/null | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' | head -n1)
mem=${mem:-4096}
# CPUs is deliberately larger than the machine: with SlurmdParameters=config_overrides slurmd
# believes the configuration, so twenty short test jobs run side by side instead of two at a
# time. KillWait=2 makes a timed-out job end within seconds of its SIGTERM.
cat >"$CONF" <<EOF
# written by jobctl scripts/slurm-up.sh
ClusterName=jobctl-ci
SlurmctldHost=localhost
SlurmUser=slurm
AuthType=auth/munge
CredType=cred/munge
AuthAltTypes=auth/jwt
AuthAltParameters=jwt_key=$DIR/etc/jwt_hs256.key
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.daemon.pid
SlurmdPidFile=$DIR/run/slurmd.daemon.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=100
SchedulerType=sched/backfill
SlurmdParameters=config_overrides
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
MinJobAge=3600
KillWait=2
MailProg=/bin/true
NodeName=localhost NodeHostname=localhost NodeAddr=127.0.0.1 CPUs=24 RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
chmod 644 "$CONF"

alive() { # alive NAME: the daemon we recorded is still running
    local f="$DIR/run/$1.pid"
    [ -s "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null
}

start() { # start NAME CMD...: detached, logs to $DIR/log/NAME.out, pid recorded
    local name=$1
    shift
    setsid "$@" </dev/null >>"$DIR/log/$name.out" 2>&1 &
    echo $! >"$DIR/run/$name.pid"
}

wait_for() { # wait_for WHAT SECONDS CMD...
    local what=$1 secs=$2
    shift 2
    local i
    for ((i = 0; i < secs * 10; i++)); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    die "$what not ready after ${secs}s"
}

# --- munged ---------------------------------------------------------------------------------
if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    : # a munged is already answering (ours or the system's); use it
else
    [ -s /etc/munge/munge.key ] || die "/etc/munge/munge.key is missing"
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    start munged setpriv --reuid munge --regid munge --init-groups /usr/sbin/munged -F
    wait_for munged 10 bash -c 'munge -n | unmunge'
fi

# --- slurmctld and slurmd --------------------------------------------------------------------
if ! alive slurmctld; then
    start slurmctld /usr/sbin/slurmctld -D -i -f "$CONF"
fi
wait_for slurmctld 20 scontrol ping
if ! alive slurmd; then
    start slurmd /usr/sbin/slurmd -D -N localhost -f "$CONF"
fi
node_ready() {
    local st
    st=$(sinfo -h -n localhost -o '%t' 2>/dev/null) || return 1
    case "$st" in idle* | mix* | alloc*) return 0 ;; *) return 1 ;; esac
}
wait_for "node localhost" 30 node_ready

# --- token and slurmrestd --------------------------------------------------------------------
TOKEN=$(scontrol token username="$JOB_USER" lifespan=86400 | sed -n 's/^SLURM_JWT=//p')
[ -n "$TOKEN" ] || die "scontrol token gave no token"

if ! alive slurmrestd; then
    # slurmrestd refuses to run as root: it binds, then drops to nobody. The dbv0.0.3x plugins
    # need slurmdbd, so only the plain openapi plugins are loaded. SLURM_JWT=daemon makes it
    # pass each client's token on to slurmctld.
    start slurmrestd env SLURM_JWT=daemon SLURM_CONF="$CONF" /usr/sbin/slurmrestd \
        -u nobody -g nogroup -a rest_auth/jwt \
        -s openapi/v0.0.38,openapi/v0.0.37,openapi/v0.0.36 "127.0.0.1:$PORT"
fi
rest_ping() {
    local reply
    exec 3<>"/dev/tcp/127.0.0.1/$PORT" || return 1
    printf 'GET /slurm/v0.0.38/ping HTTP/1.1\r\nHost: 127.0.0.1\r\nX-SLURM-USER-NAME: %s\r\nX-SLURM-USER-TOKEN: %s\r\nConnection: close\r\n\r\n' \
        "$JOB_USER" "$TOKEN" >&3
    reply=$(timeout 5 cat <&3)
    exec 3<&-
    case "$reply" in "HTTP/1.1 200"*'"pings"'*) return 0 ;; *) return 1 ;; esac
}
wait_for slurmrestd 20 rest_ping

umask 077
cat >"$DIR/slurm.env" <<EOF
SLURM_REST_URL=http://127.0.0.1:$PORT
SLURM_USER_NAME=$JOB_USER
SLURM_JWT=$TOKEN
SLURM_CONF=$CONF
SLURM_TEST_JOB_DIR=$DIR/jobs
EOF
say "ready: slurmrestd on http://127.0.0.1:$PORT, env file $DIR/slurm.env"
