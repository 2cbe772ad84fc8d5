#!/usr/bin/env bash
# Run the fuzz targets of tests/fuzz.rs (proptest, stable Rust) for MINUTES
# minutes: rounds of S2S_FUZZ_CASES cases per target (default 5000), each round
# with fresh random seeds, until the time is up. Prints the inputs tried per
# target and in all; exits non-zero on the first failure (proptest prints the
# shrunk input: keep it as a regression test in tests/fuzz.rs). The test profile
# is used on purpose: its overflow checks and debug assertions turn silent
# arithmetic bugs into failures.
#
# Usage: bash benches/fuzz.sh [MINUTES]
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-10}
export S2S_FUZZ_CASES=${S2S_FUZZ_CASES:-5000}
cargo test --test fuzz --no-run
end=$(( $(date +%s) + minutes * 60 ))
log=$(mktemp)
rounds=0
while [ "$(date +%s)" -lt "$end" ]; do
  cargo test --test fuzz -- --nocapture 2>&1 | tee -a "$log" | grep -E '^fuzz: [a-z]+: [0-9]+ inputs|test result'
  rounds=$((rounds + 1))
done
echo "fuzzed for $minutes minute(s), $rounds round(s):"
awk '/^fuzz: [a-z]+: [0-9]+ inputs/ { n[$2] += $3; t += $3 }
     END { for (k in n) printf "  %s %d\n", k, n[k]; printf "  total %d inputs\n", t }' "$log"
rm -f "$log"
