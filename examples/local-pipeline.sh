#!/usr/bin/env bash
# A CI step that fans out local jobs, waits for all of them, and turns jobctl's exit code into
# a pipeline verdict. Run from anywhere with jobctl on PATH (or JOBCTL=path/to/jobctl).
set -uo pipefail
JOBCTL=${JOBCTL:-jobctl}
run_id=${CI_PIPELINE_ID:-$(date +%s)}

refs=()
for shard in 1 2 3; do
  # --key makes a retried CI step reuse the jobs it already started instead of duplicating them.
  ref=$("$JOBCTL" submit -o quiet --key "tests-$run_id-$shard" --name "shard-$shard" \
        --arg SHARD="$shard" --opt shell=true -- 'echo "shard $SHARD"; sleep 1') || exit $?
  refs+=("$ref")
done

"$JOBCTL" wait --timeout 10m "${refs[@]}"
code=$?
case $code in
  0) echo "all shards passed" ;;
  1) echo "a shard failed:"; for r in "${refs[@]}"; do "$JOBCTL" logs --stderr "$r"; done ;;
  3) echo "timed out; the jobs keep running: ${refs[*]}" ;;
  5) echo "a shard was canceled" ;;
  7) echo "could not reach the backend; job state unknown" ;;
  *) echo "jobctl failed with exit code $code" ;;
esac
exit $code
