#!/usr/bin/env bash
# Time README command 1 as a new user runs it: a fresh clone, a fresh venv, an empty asset
# cache; then the rerun from cache. Writes benchmarks/results/readme_command_timing.json.
#   bash benchmarks/time_readme_command.sh [WORKDIR]
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-$(mktemp -d)}
rm -rf "$work/clone" "$work/cache"
git clone -q "$repo" "$work/clone"
cd "$work/clone"
export SLIMBERT_CACHE="$work/cache"
t0=$(date +%s)
python3 -m venv .venv && . .venv/bin/activate && pip install -q -e '.[dev]'
t1=$(date +%s)
slimbert run > "$work/run1.log" 2>&1
t2=$(date +%s)
cp runs/default/run.json "$work/run1.json"   # the rerun overwrites it with "reused" stages
slimbert run > "$work/run2.log" 2>&1
t3=$(date +%s)
python - "$repo/benchmarks/results/readme_command_timing.json" <<PY
import json, platform, os, sys
out = {"install_seconds": $t1 - $t0, "first_run_seconds": $t2 - $t1,
       "command1_total_seconds": $t2 - $t0, "rerun_seconds": $t3 - $t2,
       "cores": os.cpu_count(), "python": platform.python_version(),
       "first_run_stages": json.load(open("$work/run1.json"))["stages"]}
json.dump(out, open(sys.argv[1], "w"), indent=2)
print(json.dumps({k: v for k, v in out.items() if k != "stages"}))
PY
cp runs/default/report.json "$repo/benchmarks/results/default_report.json"
cp runs/default/report.md "$repo/benchmarks/results/default_report.md"
