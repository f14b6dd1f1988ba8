#!/usr/bin/env bash
# 10,000 idle SSE connections to one frontend (dc1-fe1), held for 5 s, nothing published.
# Reports the frontend's resident memory before and after, per connection.
# Target (issue 4): <= 4 KiB of server memory per idle connection.
source "$(dirname "$0")/lib.sh"
bench_build
bench_up "$(bench_topology)"
bench_run --frontends dc1-fe1 --viewers "$(size 50 10000)" --hold "$(size 1s 5s)"
