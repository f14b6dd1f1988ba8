#!/usr/bin/env bash
# Likes posted to dc1-fe1 as fast as 64 keep-alive connections allow for 10 s, with viewers
# on every frontend of every datacenter. Checks exact totals: the last total every viewer
# sees equals the likes accepted (likes.viewers_exact_total == connected), and reports like
# freshness (receive time minus when the like that made the total was accepted).
# Target (issue 4): >= 90 % of the request rate nginx `return 204` reaches with the same
# generator; scripts/bench/compare.sh runs both in one go.
source "$(dirname "$0")/lib.sh"
bench_build
bench_up "$(bench_topology)"
bench_run --dcs dc1,dc2,dc3 --viewers "$(size 12 600)" --likes \
    --duration "$(size 1s 10s)" --publish-concurrency 64 --drain 10s
