#!/usr/bin/env bash
# Run the test suite as CI does (.ci/run and the README both call this file): the fast tests first
# (-m "not slow": seconds to a few minutes), then the slow ones (real vLLM engines, `vllm serve`, multi-process and
# subprocess training), and print the count of each. A failing fast test shows up before the long slow run starts.
#
#   bash scripts/run_tests.sh                        # everything, fast then slow
#   bash scripts/run_tests.sh tests/test_readme.py -x  # extra arguments go to both pytest runs
#   bash scripts/run_tests.sh -m slow                # an explicit -m: one pytest run with exactly that selection
#
# Both runs always happen, so both counts are printed; the exit status is non-zero if either run failed.
# PYTHON picks the interpreter (default: the .venv that scripts/setup_cpu.sh builds).
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}

LOGS=$(mktemp -d)
trap 'rm -rf "$LOGS"' EXIT

# run_pytest NAME ARGS...: run pytest, keep its output for the summary, and record its exit status in $LOGS/NAME.rc.
run_pytest() {
    local name=$1
    shift
    echo "=== $name: $PYTHON -m pytest $*"
    "$PYTHON" -m pytest "$@" 2>&1 | tee "$LOGS/$name.log"
    local rc=${PIPESTATUS[0]}
    # 5 means "no tests collected": arguments that select only fast (or only slow) tests leave the other run empty.
    if [ "$rc" -eq 5 ]; then rc=0; fi
    echo "$rc" > "$LOGS/$name.rc"
}

# pytest's closing line ("12 passed, 3 deselected in 4.56s"), with or without the ==== around it.
summary_of() {
    grep -E '(passed|failed|error|skipped|deselected|no tests ran).* in [0-9.]+s' "$LOGS/$1.log" | tail -n 1 \
        | sed -E 's/^=+ //; s/ =+$//'
}

phases=()
for arg in "$@"; do
    case $arg in -m | -m*) phases=(selected) ;; esac
done
if [ ${#phases[@]} -eq 0 ]; then
    run_pytest fast -m "not slow" "$@"
    run_pytest slow -m slow "$@"
    phases=(fast slow)
else
    run_pytest selected "$@"
fi

status=0
echo
echo "=== test counts"
for name in "${phases[@]}"; do
    rc=$(cat "$LOGS/$name.rc")
    printf '%-9s %s (exit %s)\n' "$name:" "$(summary_of "$name")" "$rc"
    if [ "$rc" -ne 0 ]; then status=1; fi
done
exit $status
