#!/usr/bin/env bash
# One video, 1,000 viewers on one frontend (dc1-fe1), 50 comments/s for 10 s.
# Target (issue 4): p99 latency <= 8 ms.
source "$(dirname "$0")/lib.sh"
bench_build
bench_up "$(bench_topology)"
bench_run --frontends dc1-fe1 --viewers "$(size 50 1000)" \
    --comments-per-sec "$(size 20 50)" --duration "$(size 1s 10s)" --drain 5s
