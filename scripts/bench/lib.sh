# shellcheck shell=bash
# Shared by the scenario scripts in this directory; sourced, not run.
#
# bench_up starts `fanfare up` (release build) on a topology and waits for its `ready` line;
# bench_run runs `fanfare bench --json` against it and prints the JSON; the EXIT trap stops
# `fanfare up` by its PID with SIGINT, so nothing is left behind.
#
# Environment:
#   BENCH_SMOKE=1      tiny sizes, so CI can run every scenario in seconds
#   BENCH_TOPOLOGY     topology file (default topology/local-3dc.toml; if its ports are taken
#                      by another `fanfare up`, a copy with every port shifted by 20000 is used)
#   FANFARE_BIN        the fanfare binary (default: target/release/fanfare, built if missing)
#   NATS_SERVER_BIN    the nats-server binary (else .tools/nats/bin, PATH)

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
SMOKE="${BENCH_SMOKE:-0}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
FANFARE="${FANFARE_BIN:-$TARGET_DIR/release/fanfare}"
UP_PID=""
WORK="$(mktemp -d "${TMPDIR:-/tmp}/fanfare-bench.XXXXXX")"

# Stops the running `fanfare up` by its PID: SIGINT, then SIGKILL after 30 s.
bench_down() {
    if [[ -n "$UP_PID" ]] && kill -0 "$UP_PID" 2>/dev/null; then
        kill -INT "$UP_PID" 2>/dev/null || true
        for _ in $(seq 1 300); do
            kill -0 "$UP_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$UP_PID" 2>/dev/null || true
    fi
    UP_PID=""
}

bench_cleanup() {
    bench_down
    rm -rf "$WORK"
}
trap bench_cleanup EXIT

# Picks a value: smoke size or full size.
size() { if [[ "$SMOKE" == 1 ]]; then echo "$1"; else echo "$2"; fi; }

bench_build() {
    if [[ -z "${FANFARE_BIN:-}" && ! -x "$FANFARE" ]]; then
        echo "building the release binary" >&2
        cargo build --release --bin fanfare >&2
    fi
}

# True when no port of topology file $1 is being listened on.
ports_free() {
    local port
    for port in $(grep -oE '(_port = [0-9]+|127\.0\.0\.1:[0-9]+)' "$1" | grep -oE '[0-9]+$'); do
        if ss -Htln "sport = :$port" | grep -q .; then return 1; fi
    done
}

# Prints a topology file whose ports are free: the given one, or a copy with every port
# shifted by 20000 (or, if those are taken too, by 20500, 21000, ...).
bench_topology() {
    local topology="${BENCH_TOPOLOGY:-topology/local-3dc.toml}"
    if ports_free "$topology"; then
        echo "$topology"
        return
    fi
    local shift shifted
    shifted="$WORK/$(basename "$topology" .toml)-shifted.toml"
    for shift in 20000 20500 21000 21500 22000; do
        python3 - "$topology" "$shifted" "$shift" <<'PY'
import re, sys
text, shift = open(sys.argv[1]).read(), int(sys.argv[3])
text = re.sub(r'(_port = )(\d+)', lambda m: m.group(1) + str(int(m.group(2)) + shift), text)
text = re.sub(r'(127\.0\.0\.1:)(\d+)', lambda m: m.group(1) + str(int(m.group(2)) + shift), text)
open(sys.argv[2], "w").write(text)
PY
        if ports_free "$shifted"; then
            echo "ports of $topology are taken: using a copy shifted by $shift" >&2
            echo "$shifted"
            return
        fi
    done
    echo "no free ports for $topology" >&2
    exit 1
}

# bench_up TOPOLOGY: starts fanfare up and waits for ready.
bench_up() {
    TOPOLOGY="$1"
    RUN_DIR="$ROOT/.fanfare/run/bench-$(basename "$0" .sh)"
    "$FANFARE" up "$TOPOLOGY" --quiet --run-dir "$RUN_DIR" >"$WORK/up.out" 2>"$WORK/up.err" &
    UP_PID=$!
    for _ in $(seq 1 1200); do
        if grep -qx ready "$WORK/up.out"; then
            return 0
        fi
        if ! kill -0 "$UP_PID" 2>/dev/null; then
            echo "fanfare up exited early:" >&2
            tail -20 "$WORK/up.err" >&2
            exit 1
        fi
        sleep 0.1
    done
    echo "fanfare up was not ready within 120 s" >&2
    exit 1
}

# bench_run ARGS...: runs fanfare bench against the running topology and prints its JSON.
bench_run() {
    local status=0
    "$FANFARE" bench --topology "$TOPOLOGY" --run-dir "$RUN_DIR" --json "$@" || status=$?
    return "$status"
}
