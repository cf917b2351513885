#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it: formatting, lints, every test, and the Slurm
# integration tests against a real single-node cluster when this machine can start one.
# Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== unused dependencies"
python3 scripts/check-unused-deps.py

# A real Slurm (munge, slurmctld, slurmd, slurmrestd on loopback) for tests/slurm_real.rs.
# slurm-up.sh exits 0 when ready, 2 when this machine cannot run one (not root, no packages),
# 1 when it tried and failed. CI (CI=true) requires the cluster; elsewhere it is optional and
# the Slurm tests say SKIPPED.
export SLURM_TEST_DIR=${SLURM_TEST_DIR:-/tmp/jobctl-slurm}
slurm_up=0
echo "== starting a test Slurm cluster"
set +e
bash scripts/slurm-up.sh
up=$?
set -e
if [ "$up" -eq 0 ]; then
  slurm_up=1
  export JOBCTL_SLURM_ENV="$SLURM_TEST_DIR/slurm.env"
  export JOBCTL_REQUIRE_SLURM=1
  trap 'bash scripts/slurm-down.sh' EXIT
elif [ "${CI:-}" = "true" ]; then
  echo "slurm-up.sh failed (exit $up): CI must run the Slurm integration tests" >&2
  exit 1
else
  echo "no Slurm cluster here (slurm-up.sh exit $up): the real-Slurm tests will be SKIPPED" >&2
fi

# xmllint validates the JUnit reports against their schema in tests/pipeline.rs (which falls
# back to a structural check without it).
if ! command -v xmllint >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  echo "== installing libxml2-utils (xmllint)"
  { apt-get install -y -qq --no-install-recommends libxml2-utils ||
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends libxml2-utils; }; } \
    >"${TMPDIR:-/tmp}/jobctl-xmllint-apt.log" 2>&1 ||
    echo "could not install libxml2-utils (see ${TMPDIR:-/tmp}/jobctl-xmllint-apt.log); JUnit checked structurally only" >&2
fi

# The official CloudPSS Python SDK against jobctl-sim (SKIPPED only when PyPI cannot be
# reached, and never under CI=true).
echo "== official CloudPSS SDK against jobctl-sim"
bash scripts/cloudpss-sdk-test.sh

echo "== cargo test"
# More test threads than cores: the Slurm time-limit test mostly waits.
cargo test --workspace --all-targets -- --test-threads=8
if [ "$slurm_up" -eq 1 ]; then
  echo "== real Slurm tests ran against $JOBCTL_SLURM_ENV"
fi
