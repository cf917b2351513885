#!/usr/bin/env bash
# Benchmarks jobctl against jobctl-sim on this machine and prints one Markdown table
# (BENCHMARKS.md holds one run). Numbers come from here, never from timed test assertions.
#
#   scripts/bench.sh            # full run (a few minutes)
#   BENCH_QUICK=1 scripts/bench.sh   # smaller sizes
#   BENCH_PROFILE=dev scripts/bench.sh   # unoptimised binaries (to try the script quickly)
#
# Needs: cargo, python3, /usr/bin/time. Everything runs on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=${BENCH_QUICK:-0}
SEQ=${BENCH_SEQUENTIAL:-$([ "$quick" = 1 ] && echo 20 || echo 50)}
WATCH=${BENCH_WATCH:-1000}
RSS_JOBS=${BENCH_RSS_JOBS:-$([ "$quick" = 1 ] && echo 2000 || echo 10000)}
LOCAL=${BENCH_LOCAL:-200}
LATENCY=${BENCH_LATENCY:-20ms}

profile=${BENCH_PROFILE:-release}
if [ "$profile" = release ]; then
    cargo build --release -q -p jobctl -p jobctl-sim
    cargo build --release -q -p jobctl-sim --example loadgen
    bin=${CARGO_TARGET_DIR:-target}/release
else
    cargo build -q -p jobctl -p jobctl-sim
    cargo build -q -p jobctl-sim --example loadgen
    bin=${CARGO_TARGET_DIR:-target}/debug
fi
work=$(mktemp -d)
sim_pid=
cleanup() {
    [ -n "$sim_pid" ] && kill "$sim_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
start_sim() {
    [ -n "$sim_pid" ] && kill "$sim_pid" 2>/dev/null && wait "$sim_pid" 2>/dev/null || true
    "$bin/jobctl-sim" --listen "127.0.0.1:$port" --latency "$1" --queue-duration 1h \
        --job-duration 2h "${@:2}" 2>/dev/null &
    sim_pid=$!
    for _ in $(seq 100); do
        python3 -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$port/_sim/health')" 2>/dev/null && return
        sleep 0.1
    done
    echo "simulator did not start" >&2
    exit 1
}
eval "$("$bin/jobctl-sim" --listen "127.0.0.1:$port" --print-env)"
: >"$work/empty.toml"
export JOBCTL_STATE_DIR="$work/state" JOBCTL_CONFIG="$work/empty.toml" NO_COLOR=1
total_requests() {
    python3 -c "import json,urllib.request as u; print(json.load(u.urlopen('http://127.0.0.1:$port/_sim/stats'))['total'])"
}
now() { date +%s.%N; }
# Runs a command under /usr/bin/time; sets secs, cpu (user+sys s) and rss (KiB).
measure() {
    local t0 t1
    t0=$(now)
    /usr/bin/time -f '%U %S %M' -o "$work/time" "$@" >"$work/out" 2>"$work/err" || true
    t1=$(now)
    secs=$(python3 -c "print($t1-$t0)")
    read -r u s rss < <(tail -1 "$work/time")
    cpu=$(python3 -c "print($u+$s)")
}
batch_file() { # N PREFIX
    python3 -c "
import json
for i in range($1):
    print(json.dumps({'profile':'slurm','name':'$2-%d'%i,'command':['true']}))" >"$work/$2.jsonl"
}

rows=()
row() { rows+=("| $1 | $2 | $3 |"); }

CPU_N=${BENCH_CPU_SUBMITS:-$([ "$quick" = 1 ] && echo 2000 || echo 10000)}
# This (virtual) machine's speed drifts by 10-20 % over minutes: each throughput row is run
# REPEAT times, alternating with the load generator, and reports the median and the range.
REPEAT=${BENCH_REPEAT:-$([ "$quick" = 1 ] && echo 1 || echo 3)}
# "median (lo-hi)" of the numbers given.
spread() { python3 -c "
import statistics,sys
v=[float(x) for x in sys.argv[2:]]; d=int(sys.argv[1])
r=lambda x: round(x,d) if d else round(x)
m=r(statistics.median(v))
print(m if len(v)==1 else '%s (%s–%s)' % (m, r(min(v)), r(max(v))))" "$@"; }

# jobctl's own CPU per submission with no latency: what jobctl costs, not what it waits for.
# Next to it, the CPU per request of the load generator (a bare reqwest client that records
# nothing): the same machine's yardstick in the same minute.
start_sim 0ms
rates=() raws=() cpus=() bare=() peaks=()
for r in $(seq "$REPEAT"); do
    /usr/bin/time -f '%U %S' -o "$work/ltime" "$bin/examples/loadgen" "http://127.0.0.1:$port" "$SLURM_JWT" 64 "$CPU_N" >"$work/lout"
    raws+=("$(cut -d' ' -f1 "$work/lout")")
    read -r lu ls < <(tail -1 "$work/ltime")
    bare+=("$(python3 -c "print(1000*($lu+$ls)/$CPU_N)")")
    batch_file "$CPU_N" "cpu$r"
    measure "$bin/jobctl" --no-progress batch "$work/cpu$r.jsonl" --concurrency 64
    rates+=("$(python3 -c "print($CPU_N/$secs)")")
    cpus+=("$(python3 -c "print(1000*$cpu/$CPU_N)")")
    peaks+=("$((rss / 1024))")
done
row "batch submit, $CPU_N jobs, concurrency 64, latency 0 ms ($REPEAT runs)" "$(spread 0 "${rates[@]}") jobs/s (the simulator alone: $(spread 0 "${raws[@]}")/s)" "jobctl CPU $(spread 3 "${cpus[@]}") ms per submission (the load generator: $(spread 3 "${bare[@]}") ms per request), peak RSS $(spread 0 "${peaks[@]}") MiB"

start_sim "$LATENCY"
for c in 1 8 16 32 64; do
    # About four seconds of submissions per row (at 20 ms), so jobctl's start-up (version
    # discovery, a token: ~50 ms) weighs the same at every concurrency.
    n=$((c * $([ "$quick" = 1 ] && echo 20 || echo 80)))
    [ "$n" -lt 200 ] && n=200
    n=${BENCH_SUBMITS:-$n}
    rates=() raws=() shares=() cpus=()
    for r in $(seq "$REPEAT"); do
        raw=$("$bin/examples/loadgen" "http://127.0.0.1:$port" "$SLURM_JWT" "$c" "$n" | cut -d' ' -f1)
        batch_file "$n" "c$c-$r"
        measure "$bin/jobctl" --no-progress batch "$work/c$c-$r.jsonl" --concurrency "$c"
        raws+=("$raw")
        rates+=("$(python3 -c "print($n/$secs)")")
        shares+=("$(python3 -c "print(100*$n/$secs/$raw)")")
        cpus+=("$(python3 -c "print(1000*$cpu/$n)")")
    done
    row "batch submit, $n jobs, concurrency $c, latency $LATENCY" "$(spread 1 "${rates[@]}") jobs/s = $(spread 0 "${shares[@]}") % of the simulator's $(spread 1 "${raws[@]}")/s" "jobctl CPU $(spread 3 "${cpus[@]}") ms per submission"
done

t0=$(now)
for i in $(seq "$SEQ"); do "$bin/jobctl" -b slurm -o quiet submit --name "seq-$i" -- true >/dev/null; done
t1=$(now)
row "sequential client (one jobctl submit per job)" "$(python3 -c "print(round($SEQ/($t1-$t0),1))") jobs/s" "$SEQ jobs"

# Watching: jobs that stay queued; the wait times out after 10 s of polling.
batch_file "$WATCH" w
"$bin/jobctl" -o ndjson batch "$work/w.jsonl" --concurrency 32 >"$work/w.ndjson" 2>/dev/null || true
before=$(total_requests)
measure "$bin/jobctl" wait --from "$work/w.ndjson" --timeout 10s --interval 1s --max-interval 1s
after=$(total_requests)
rounds=$(python3 -c "print(max(1, round($secs)))")
row "requests while watching $WATCH jobs for ${rounds} s (1 s interval)" "$((after - before)) requests" "one request per job per round: $((WATCH * rounds))"

measure "$bin/jobctl" --version
row "\`jobctl --version\` start-up" "$(python3 -c "print(round(1000*$secs,1))") ms" "peak RSS $((rss / 1024)) MiB"
measure "$bin/jobctl" status "$(head -1 "$work/w.ndjson" | python3 -c 'import json,sys; print(json.load(sys.stdin)["ref"])')"
row "\`jobctl status REF\` (slurm, latency $LATENCY)" "$(python3 -c "print(round(1000*$secs,1))") ms" "peak RSS $((rss / 1024)) MiB"

# Peak memory of wait on many CloudPSS jobs (no latency, so the submission is quick).
start_sim 0ms
python3 -c "
import json
for i in range($RSS_JOBS):
    print(json.dumps({'profile':'cloudpss','args':{'i':i},'options':{'function':'function/CloudPSS/hello'}}))" >"$work/rss.jsonl"
"$bin/jobctl" -o ndjson batch "$work/rss.jsonl" --concurrency 64 >"$work/rss.ndjson" 2>/dev/null || true
measure "$bin/jobctl" wait --from "$work/rss.ndjson" --timeout 5s --interval 1s
row "peak RSS of \`wait\` on $RSS_JOBS CloudPSS jobs" "$((rss / 1024)) MiB" "$(grep -c '"event":"line"' "$work/rss.ndjson") jobs submitted"

python3 -c "
import json
for i in range($LOCAL):
    print(json.dumps({'name':'l-%d'%i,'command':['true']}))" >"$work/local.jsonl"
measure "$bin/jobctl" --no-progress batch "$work/local.jsonl" --concurrency 8
row "local backend, batch of $LOCAL, concurrency 8" "$(python3 -c "print(round($LOCAL/$secs,1))") jobs/s" "CPU $(python3 -c "print(round(1000*$cpu/$LOCAL,2))") ms per job (jobctl only)"

echo "Machine: $(nproc) cores, $(uname -sr); jobctl $("$bin/jobctl" --version | awk '{print $2}') ($profile build); $(date -u +%Y-%m-%d)"
echo
echo "| measurement | result | note |"
echo "|---|---|---|"
printf '%s\n' "${rows[@]}"
