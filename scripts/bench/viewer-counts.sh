#!/usr/bin/env bash
# How fast viewer counts converge across datacenters: a viewer in dc1 watches a video's
# `viewers` events while, in each round, five viewers join on a dc2 frontend and leave again.
# Prints the time from the joins (and from the leaves) until dc1's count shows them.
# Target (issue 12): <= 2 s.
source "$(dirname "$0")/lib.sh"
bench_build
bench_up "$(bench_topology)"
url_of() {
    "$FANFARE" topology endpoints "$TOPOLOGY" --json |
        python3 -c "import json,sys; d=json.load(sys.stdin); print([f['url'] for dc in d['datacenters'] for f in dc['frontends'] if f['name']==sys.argv[1]][0])" "$1"
}
python3 "$(dirname "$0")/viewer-counts.py" "$(url_of dc1-fe1)" "$(url_of dc2-fe1)" "$(size 2 10)" 5
