#!/usr/bin/env bash
# The official CloudPSS Python SDK (cloudpss 5.0.9 from PyPI) against jobctl-sim: creates jobs,
# fetches them, reads their output streams to the end (SSE, resumed after dropped connections,
# and WebSocket), aborts another. Proves the simulator speaks the platform's protocol as a
# client nobody here wrote understands it.
#
# Prints SKIPPED (exit 0) when the package index cannot be reached, except under CI=true, where
# that is a failure. Usage: scripts/cloudpss-sdk-test.sh   (builds jobctl-sim if needed)
set -euo pipefail
cd "$(dirname "$0")/.."

SDK_VERSION=5.0.9
VENV=${CLOUDPSS_SDK_VENV:-/tmp/jobctl-cloudpss-sdk-venv}
PYTHON=${PYTHON:-python3}

skip_or_fail() {
  if [ "${CI:-}" = "true" ]; then
    echo "cloudpss SDK test: $1 (CI requires this test)" >&2
    exit 1
  fi
  echo "cloudpss SDK test SKIPPED: $1" >&2
  exit 0
}

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV" || skip_or_fail "cannot create a Python virtualenv"
fi
if ! "$VENV/bin/python" -c "import cloudpss, sys; sys.exit(cloudpss.__version__ != '$SDK_VERSION')" 2>/dev/null; then
  if ! "$VENV/bin/pip" install --quiet --disable-pip-version-check "cloudpss==$SDK_VERSION"; then
    if "$VENV/bin/pip" download --quiet --no-deps -d "$VENV/probe" pip >/dev/null 2>&1; then
      echo "cloudpss SDK test: pip install cloudpss==$SDK_VERSION failed" >&2
      exit 1
    fi
    skip_or_fail "the package index cannot be reached"
  fi
fi

cargo build --quiet -p jobctl-sim --bin jobctl-sim
SIM_BIN=target/debug/jobctl-sim
LOG=$(mktemp)
"$SIM_BIN" --listen 127.0.0.1:0 --job-duration 1s --queue-duration 200ms >"$LOG" 2>&1 &
SIM_PID=$!
trap 'kill "$SIM_PID" 2>/dev/null || true; rm -f "$LOG"' EXIT

BASE=""
for _ in $(seq 1 100); do
  BASE=$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$LOG" | head -n1 || true)
  [ -n "$BASE" ] && break
  kill -0 "$SIM_PID" 2>/dev/null || { cat "$LOG" >&2; echo "jobctl-sim exited" >&2; exit 1; }
  sleep 0.1
done
[ -n "$BASE" ] || { cat "$LOG" >&2; echo "jobctl-sim did not announce its address" >&2; exit 1; }

TOKEN=$(curl -fsS -X POST "$BASE/_sim/cloudpss/sdk-token" | "$VENV/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["token"])')

echo "== official cloudpss SDK $SDK_VERSION against jobctl-sim at $BASE"
env CLOUDPSS_API_URL="$BASE/" CLOUDPSS_TOKEN="$TOKEN" JOBCTL_SIM_URL="$BASE" \
  timeout 300 "$VENV/bin/python" tests/fixtures/cloudpss-sdk/sdk_driver.py
