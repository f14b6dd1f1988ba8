#!/usr/bin/env bash
# How deliveries/s and frontend memory grow with the audience: one video, 200 comments/s for
# 2.5 s, at 1k, 5k, 10k and 20k viewers spread over dc1's two frontends (one frontend process
# holds at most about 16,000 connections here) and two bench processes (one holds at most
# about 19,700). Prints one JSON line per size.
source "$(dirname "$0")/lib.sh"
bench_build
bench_up "$(bench_topology)"
for viewers in $(size "20 40" "1000 5000 10000 20000"); do
    bench_run --frontends dc1-fe1,dc1-fe2 --processes 2 --viewers "$viewers" \
        --comments-per-sec "$(size 10 200)" --duration "$(size 1s 2.5s)" --drain "$(size 5s 30s)"
    echo
done
