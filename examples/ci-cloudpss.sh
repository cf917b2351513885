#!/bin/sh
# CI step: run one CloudPSS function, wait for it, and fail the pipeline unless it succeeds.
#
#   examples/ci-cloudpss.sh [KEY=VALUE]...      each KEY=VALUE becomes a job argument (--arg)
#
# Configuration (environment):
#   CLOUDPSS_GQL_URL, CLOUDPSS_USERNAME + CLOUDPSS_PASSWORD (or CLOUDPSS_TOKEN)
#                      the platform; inject them from your CI secret store
#   CLOUDPSS_FUNCTION  function to run (default function/CloudPSS/hello)
#   JOB_TIMEOUT        how long to wait before giving up (default 30m)
#   JOB_KEY            idempotency key; a re-run of the same pipeline step with the same key
#                      reuses the job already submitted instead of submitting another
#   JOBCTL             the jobctl binary (default: jobctl on PATH)
#
# The exit code is jobctl's (CONTRACT §6), so the pipeline fails for every reason below.
set -u

JOBCTL="${JOBCTL:-jobctl}"
FUNCTION="${CLOUDPSS_FUNCTION:-function/CloudPSS/hello}"
TIMEOUT="${JOB_TIMEOUT:-30m}"

for kv in "$@"; do
    case "$kv" in
        *=*) ;;
        *) echo "ci-cloudpss: job arguments are KEY=VALUE, got '$kv'" >&2; exit 2 ;;
    esac
done

# Build the command line without losing quoting: prefix every KEY=VALUE with --arg.
n=$#
i=0
while [ "$i" -lt "$n" ]; do
    kv="$1"
    shift
    set -- "$@" --arg "$kv"
    i=$((i + 1))
done
if [ -n "${JOB_KEY:-}" ]; then
    set -- "$@" --key "$JOB_KEY"
fi

# Progress and errors go to stderr; with -o quiet stdout carries only the job reference.
ref=$("$JOBCTL" -b cloudpss submit --opt "function=$FUNCTION" "$@" \
    --wait --timeout "$TIMEOUT" --no-progress -o quiet)
rc=$?

case "$rc" in
    0) echo "ci-cloudpss: $ref succeeded" >&2 ;;
    1) echo "ci-cloudpss: $ref failed" >&2 ;;
    5) echo "ci-cloudpss: $ref was canceled" >&2 ;;
    3)
        echo "ci-cloudpss: $ref did not finish within $TIMEOUT; aborting it" >&2
        "$JOBCTL" abort "$ref" >&2 || true
        ;;
    2) echo "ci-cloudpss: invalid job or configuration (see above)" >&2 ;;
    4) echo "ci-cloudpss: CloudPSS refused the credentials" >&2 ;;
    6) echo "ci-cloudpss: job or resource not found" >&2 ;;
    7) echo "ci-cloudpss: CloudPSS unreachable or answering garbage; try again later" >&2 ;;
    *) echo "ci-cloudpss: jobctl exited with $rc" >&2 ;;
esac

# Leave the final job record in the build log, whatever happened.
if [ -n "$ref" ]; then
    "$JOBCTL" status "$ref" -o json >&2 || true
fi
exit "$rc"
