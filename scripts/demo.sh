#!/usr/bin/env bash
# The qnet demo: deploy the three-node line, make EPR pairs, teleport a state, show
# the processes, tear everything down. Run from the repository root:
#   bash scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked --quiet
qnet=target/release/qnet
run_dir=.qnet/demo-line-3

# Whatever happens, leave nothing running.
trap '"$qnet" down --run-dir "$run_dir" >/dev/null 2>&1 || true' EXIT

"$qnet" up topologies/line-3.toml --run-dir "$run_dir"
echo
"$qnet" run epr --run-dir "$run_dir" --from alice --to bob --pairs 10000 --basis X
echo
"$qnet" run teleport --run-dir "$run_dir" --from bob --to carol --state plus_i --shots 1000
echo
"$qnet" status --run-dir "$run_dir"
echo
"$qnet" down --run-dir "$run_dir"
trap - EXIT
