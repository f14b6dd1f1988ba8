#!/usr/bin/env bash
# 1,000 viewers spread over every frontend of three datacenters, 50 comments/s for 10 s
# published to dc1-fe1: two thirds of the deliveries cross a gateway.
# Target (issue 4): p99 latency <= 10 ms.
source "$(dirname "$0")/lib.sh"
bench_build
bench_up "$(bench_topology)"
bench_run --dcs dc1,dc2,dc3 --viewers "$(size 60 1000)" \
    --comments-per-sec "$(size 20 50)" --duration "$(size 1s 10s)" --drain 5s
