#!/usr/bin/env python3
"""Idle-connection memory of a running SSE server.

Opens N subscriber connections (GET <url> with Accept: text/event-stream)
spread over C channels, waits until every one has its response headers,
and prints the summed RSS of the given pids' process sessions before and
after, and the difference per connection.

    scripts/bench/idle-rss.py URL_TEMPLATE PID[,PID...] [N] [CHANNELS]

URL_TEMPLATE has {video} for the channel, e.g. the nchan_sub= line that
`scripts/bench/peers start` prints. Loopback only; bounded by timeouts.
"""
import os
import socket
import sys
import time
import urllib.parse


def session_members(leader):
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[3]) == leader:  # field 6, session id
                out.append(int(p))
        except (OSError, IndexError, ValueError):
            pass
    return out


def rss_kib(leaders):
    total = 0
    for leader in leaders:
        for pid in session_members(leader):
            try:
                with open(f"/proc/{pid}/status") as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            total += int(line.split()[1])
            except OSError:
                pass
    return total


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    template = sys.argv[1]
    leaders = [int(p) for p in sys.argv[2].split(",")]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
    channels = int(sys.argv[4]) if len(sys.argv) > 4 else 100

    u = urllib.parse.urlsplit(template.replace("{video}", "CHAN"))
    host, port = u.hostname, u.port or 80
    if not (host.startswith("127.") or host in ("localhost", "::1")):
        sys.exit("loopback addresses only")

    time.sleep(1)
    before = rss_kib(leaders)
    socks = []
    deadline = time.monotonic() + 60
    for i in range(n):
        path = u.path.replace("CHAN", f"idle{i % channels}")
        s = socket.create_connection((host, port), timeout=10)
        s.sendall(
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "Accept: text/event-stream\r\n\r\n".encode()
        )
        socks.append(s)
    ok = 0
    for s in socks:
        s.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            head = s.recv(4096)
            if head.startswith(b"HTTP/1.1 200"):
                ok += 1
        except OSError:
            pass
    time.sleep(2)  # let the servers settle after the burst
    after = rss_kib(leaders)
    for s in socks:
        s.close()
    delta = after - before
    print(f"connections={n} answered_200={ok} rss_before_kib={before} "
          f"rss_after_kib={after} delta_kib={delta} "
          f"per_connection_bytes={delta * 1024 // max(ok, 1)}")


if __name__ == "__main__":
    main()
