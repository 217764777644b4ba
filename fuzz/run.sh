#!/usr/bin/env bash
# Runs the fuzz targets, one after another, each for SECONDS (default 600).
#
#   fuzz/run.sh [SECONDS] [TARGET...]     e.g. fuzz/run.sh 600 request_path
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
# Each target starts from its committed seeds (fuzz/seeds/TARGET) plus the
# working corpus it grew before (fuzz/corpus/TARGET, not committed). Crashes
# land in fuzz/artifacts/TARGET; add a fixed one to fuzz/seeds/TARGET so it
# is replayed on every later run. Prints the executions run per target.
# Inputs are at most FUZZ_MAX_LEN bytes (default 4096).
set -euo pipefail
cd "$(dirname "$0")"

seconds="${1:-600}"
shift || true
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
  targets=(request_path config_parse http_head rpc_envelope)
fi

mkdir -p logs
summary=()
failed=0
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  log="logs/$t.log"
  echo "==> $t for ${seconds}s (log: fuzz/$log)"
  status=0
  cargo +nightly fuzz run "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$seconds" -max_len="${FUZZ_MAX_LEN:-4096}" -print_final_stats=1 >"$log" 2>&1 || status=$?
  done_line="$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1 || true)"
  runs="$(grep -E '^Done [0-9]+ runs' "$log" | tail -1 || true)"
  echo "    ${done_line:-no DONE line}"
  echo "    ${runs:-no Done line}"
  if [ "$status" -ne 0 ]; then
    echo "    FAILED (exit $status): see fuzz/$log and fuzz/artifacts/$t/"
    failed=1
  fi
  summary+=("$t: ${runs:-no result} (exit $status)")
done
echo "==> summary"
printf '    %s\n' "${summary[@]}"
exit "$failed"
