#!/usr/bin/env bash
# 10,000 viewers connecting at once to one frontend (dc1-fe1), up to 2,048 connects in
# flight; connect_all_ms is the time until the last one got its 200 head.
# Target (issue 4): all 10,000 connected within 1 s.
source "$(dirname "$0")/lib.sh"
bench_build
bench_up "$(bench_topology)"
bench_run --frontends dc1-fe1 --viewers "$(size 50 10000)" --connect-concurrency 2048 \
    --hold 1s
