#!/usr/bin/env bash
# fanfare and the two peers (nginx + nchan, Pushpin) on the same scenarios, in one run, with
# the same generator (`fanfare bench`), so that each comparison is a ratio measured side by
# side on the machine as it is during the run.
#
#   scenario        fanfare                          nchan / Pushpin / nginx
#   one-video-1k    1k viewers on dc1-fe1, 50/s, 10s  1k subscribers of one channel, 50/s
#   one-video-5k    5k viewers on dc1-fe1, 200/s, 2.5s 5k subscribers, 200/s
#   connect-10k     10k viewers at once on dc1-fe1    10k subscribers at once
#   likes-64        likes-3dc (600 viewers, 3 dcs),   nginx `return 204`, the same request
#   likes-1024      64 or 1,024 publish connections   loop on as many connections
#
# Prints one JSON line per (scenario, system): the bench's report plus "scenario" and
# "system" (fanfare, nchan, pushpin or nginx-204); a table of the main figures goes to stderr at the end. Installs the peers from
# Debian's packages if they are missing (scripts/bench/peers install), starts them on
# loopback, and stops them and `fanfare up` on exit.
#
# The yardstick runs the same viewer scenarios last: ../shared/yardstick/limitcast, a minimal
# broadcaster (one epoll loop, one thread) that shows how close to this machine's limit a
# result is. It is built from where it lives (never copied here) when that folder exists, and
# left out, with a note, when it does not.
#
# Environment, besides lib.sh's: COMPARE_PEERS ("nchan pushpin" by default; "" for fanfare
# only), PEERS_DIR (where the peers keep configs, logs and pids; default a temporary dir),
# YARDSTICK_DIR (default ../shared/yardstick/limitcast; "" leaves it out).
# shellcheck source=scripts/bench/lib.sh
source "$(dirname "$0")/lib.sh"

PEERS="${COMPARE_PEERS-nchan pushpin}"
PEERS_DIR="${PEERS_DIR:-$WORK/peers}"
PEERS_STARTED=0
RESULTS="$WORK/results.jsonl"
: >"$RESULTS"

YARDSTICK_DIR="${YARDSTICK_DIR-$ROOT/../shared/yardstick/limitcast}"
YARDSTICK_PORT=18095
YARDSTICK_PID=""

compare_cleanup() {
    if [[ "$PEERS_STARTED" == 1 ]]; then
        scripts/bench/peers stop "$PEERS_DIR" >&2 || true
    fi
    if [[ -n "$YARDSTICK_PID" ]]; then
        kill "$YARDSTICK_PID" 2>/dev/null || true
        wait "$YARDSTICK_PID" 2>/dev/null || true
    fi
    bench_cleanup
}
trap compare_cleanup EXIT

# Prints the report on stdin as one line with the scenario and server added, and keeps it for
# the table.
label() {
    python3 -c '
import json, sys
report = json.loads(sys.stdin.read())
report = {"scenario": sys.argv[1], "system": sys.argv[2], **report}
print(json.dumps(report))
' "$1" "$2" | tee -a "$RESULTS"
}

# The pids of every process of the peers' sessions (each recorded pid leads one).
peer_pids() {
    local pid member
    while read -r _ pid; do
        for member in $(ps -o pid= -s "$pid"); do
            printf -- '--server-pid %s ' "$member"
        done
    done <"$PEERS_DIR/pids"
}

# peer_run SCENARIO SERVER SUB_URL PUB_URL FORMAT ARGS...
peer_run() {
    local scenario="$1" server="$2" sub="$3" pub="$4" format="$5"
    shift 5
    # A peer that loses messages or refuses viewers makes the bench exit non-zero; that is a
    # result to report, not a reason to stop (label still fails if no report came).
    # shellcheck disable=SC2046 # one word per flag and pid
    { "$FANFARE" bench --target generic --json --sub-url "$sub" --pub-url "$pub" \
        --pub-format "$format" $(peer_pids) "$@" || true; } | label "$scenario" "$server"
}

bench_build

# fanfare first, on its own: the peers are not running yet.
bench_up "$(bench_topology)"
ONE_1K=(--viewers "$(size 20 1000)" --comments-per-sec "$(size 10 50)" --duration "$(size 1s 10s)" --drain 5s)
ONE_5K=(--viewers "$(size 40 5000)" --comments-per-sec "$(size 20 200)" --duration "$(size 1s 2.5s)" --drain 10s)
CONNECT=(--viewers "$(size 50 10000)" --connect-concurrency 2048 --hold 1s)
LIKES=(--likes --duration "$(size 1s 10s)" --drain 5s)

# Connects first, on a fresh process: its memory per connection is then comparable with the
# idle-10k scenario's (later runs would reuse memory the earlier ones grew).
bench_run --frontends dc1-fe1 "${CONNECT[@]}" | label connect-10k fanfare
bench_run --frontends dc1-fe1 "${ONE_1K[@]}" | label one-video-1k fanfare
bench_run --frontends dc1-fe1 "${ONE_5K[@]}" | label one-video-5k fanfare
for width in 64 1024; do
    bench_run --dcs dc1,dc2,dc3 --viewers "$(size 12 600)" "${LIKES[@]}" \
        --publish-concurrency "$width" | label "likes-$width" fanfare
done
# fanfare stops before the peers start, so each system has the cores to itself.
bench_down

if [[ -n "$PEERS" ]]; then
    scripts/bench/peers install >&2
    mkdir -p "$PEERS_DIR"
    declare -A URL
    while IFS='=' read -r key value; do
        [[ -n "$key" ]] && URL[$key]="$value"
    done < <(scripts/bench/peers start "$PEERS_DIR")
    PEERS_STARTED=1
    for peer in $PEERS; do
        case "$peer" in
            nchan) sub="${URL[nchan_sub]}" pub="${URL[nchan_pub]}" format=raw ;;
            pushpin) sub="${URL[pushpin_sub]}" pub="${URL[pushpin_pub]}" format=pushpin ;;
            *) echo "unknown peer $peer (nchan, pushpin)" >&2; exit 2 ;;
        esac
        peer_run connect-10k "$peer" "$sub" "$pub" "$format" "${CONNECT[@]}"
        peer_run one-video-1k "$peer" "$sub" "$pub" "$format" "${ONE_1K[@]}"
        peer_run one-video-5k "$peer" "$sub" "$pub" "$format" "${ONE_5K[@]}"
    done
    # The likes baseline: nginx answering `return 204` to the same request loop.
    for width in 64 1024; do
        peer_run "likes-$width" nginx-204 "${URL[noop]}" "${URL[noop]}" raw --viewers 0 \
            "${LIKES[@]}" --publish-concurrency "$width"
    done
fi

if [[ -n "$YARDSTICK_DIR" && -f "$YARDSTICK_DIR/Cargo.toml" ]]; then
    if [[ "$PEERS_STARTED" == 1 ]]; then
        scripts/bench/peers stop "$PEERS_DIR" >&2 || true
        PEERS_STARTED=0
    fi
    echo "building the yardstick from $YARDSTICK_DIR" >&2
    cargo build --release --quiet --manifest-path "$YARDSTICK_DIR/Cargo.toml" \
        --target-dir "$ROOT/.tools/limitcast-target" >&2
    "$ROOT/.tools/limitcast-target/release/limitcast" --engine mio --threads 1 \
        --listen "127.0.0.1:$YARDSTICK_PORT" --max-secs 900 >"$WORK/yardstick.log" 2>&1 &
    YARDSTICK_PID=$!
    for _ in $(seq 1 100); do
        ss -Htln "sport = :$YARDSTICK_PORT" | grep -q . && break
        sleep 0.1
    done
    base="http://127.0.0.1:$YARDSTICK_PORT"
    for scenario in connect-10k one-video-1k one-video-5k; do
        case "$scenario" in
            connect-10k) args=("${CONNECT[@]}") ;;
            one-video-1k) args=("${ONE_1K[@]}") ;;
            one-video-5k) args=("${ONE_5K[@]}") ;;
        esac
        { "$FANFARE" bench --target generic --json --sub-url "$base/sub/{video}" \
            --pub-url "$base/pub/{video}" --pub-format raw --server-pid "$YARDSTICK_PID" \
            "${args[@]}" || true; } | label "$scenario" yardstick
    done
else
    echo "no yardstick at ${YARDSTICK_DIR:-(none)}: left out of this run" >&2
fi

python3 - "$RESULTS" >&2 <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
def ms(report, key):
    latency = report.get("latency_ms") or {}
    return f"{latency[key]:.1f}" if key in latency else "-"
print(f"{'scenario':<13} {'system':<10} {'connected':>9} {'received/expected':>19} "
      f"{'deliv/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'conn ms':>8} {'KiB/conn':>8} "
      f"{'srv cpu':>7} {'likes/s':>8}")
for r in rows:
    server = r.get("server") or {}
    likes = r.get("likes") or {}
    mem = server.get("memory_per_connection_kib")
    print(f"{r['scenario']:<13} {r['system']:<10} {r['connected']:>9} "
          f"{str(r['received']) + '/' + str(r['expected']):>19} "
          f"{r['deliveries_per_sec']:>9.0f} {ms(r, 'p50'):>8} {ms(r, 'p99'):>8} "
          f"{r['connect_all_ms'] or 0:>8.0f} {mem if mem is None else round(mem, 2)!s:>8} "
          f"{server.get('cpu_s', 0):>7.1f} {likes.get('requests_per_sec', 0):>8.0f}")
PY
