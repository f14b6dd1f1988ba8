#!/usr/bin/env bash
# Thousands of live videos at once, most of them quiet: N videos with one viewer each, idle
# for 30 s, then one comment on each of 100 of them drawn at random (20 a second). Each run
# reports the CPU of every process of the topology while idle (`idle`), the viewer frontends'
# memory per connection (`server.memory_per_connection_kib`) and the comments' latency.
# Sizes: 1k, 3k and 10k videos on dc1-fe1; 30k over dc1's two frontends (one frontend holds at
# most about 16,000 connections here) with two bench processes (one holds about 19,700).
# Before them, in the same run: the topology idle with nobody connected, and one video with
# 1,000 viewers at 50 comments/s, the light-load reference for a quiet video's latency.
# Targets (issue 12): <= 4 KiB per idle viewer at 10k videos; the topology idle <= 5 % of one
# core at 10k videos and <= 2 % with no viewers; a quiet video's comment p99 within 2x the
# one-video p99 of the same run.
source "$(dirname "$0")/lib.sh"
bench_build
bench_up "$(bench_topology)"
HOLD="$(size 1s 30s)"
QUIET=(--comments-per-sec 20 --duration "$(size 0.5s 5s)" --drain "$(size 5s 15s)")

bench_run --viewers 0 --videos 1 --hold "$HOLD"
echo
bench_run --frontends dc1-fe1 --viewers "$(size 20 1000)" \
    --comments-per-sec "$(size 10 50)" --duration "$(size 1s 10s)" --drain 5s
echo
for videos in $(size "20" "1000 3000 10000"); do
    bench_run --frontends dc1-fe1 --viewers "$videos" --videos "$videos" --hold "$HOLD" "${QUIET[@]}"
    echo
done
videos="$(size 40 30000)"
bench_run --frontends dc1-fe1,dc1-fe2 --processes 2 --viewers "$videos" --videos "$videos" \
    --hold "$HOLD" "${QUIET[@]}"
