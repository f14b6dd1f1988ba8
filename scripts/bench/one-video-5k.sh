#!/usr/bin/env bash
# One video, 5,000 viewers on one frontend (dc1-fe1), 200 comments/s for 2.5 s published to
# the same frontend: 1,000,000 deliveries/s at the peak.
# Target (issue 4): every comment delivered to every viewer, p99 latency <= 100 ms.
source "$(dirname "$0")/lib.sh"
bench_build
bench_up "$(bench_topology)"
bench_run --frontends dc1-fe1 --viewers "$(size 50 5000)" \
    --comments-per-sec "$(size 20 200)" --duration "$(size 1s 2.5s)" --drain 10s
