#!/usr/bin/env python3
"""How fast global viewer counts converge across datacenters.

One watcher stream of a video on WATCH_URL's frontend reads its `viewers` events. Each round
opens JOINERS streams of the same video on JOIN_URL's frontend (another datacenter), times
until the watcher's count includes them, closes them, and times until it no longer does.
Prints one JSON object: every round's join and leave times in milliseconds and their
percentiles.

    scripts/bench/viewer-counts.py WATCH_BASE JOIN_BASE [ROUNDS] [JOINERS]

WATCH_BASE and JOIN_BASE are frontend base URLs (http://127.0.0.1:8111). Loopback only; every
wait is bounded.
"""
import json
import socket
import sys
import time
import urllib.parse

WAIT = 30.0


def open_stream(base, video):
    url = urllib.parse.urlsplit(base)
    sock = socket.create_connection((url.hostname, url.port), timeout=WAIT)
    request = (
        f"GET /v1/videos/{video}/events HTTP/1.1\r\nHost: {url.netloc}\r\n"
        "Accept: text/event-stream\r\n\r\n"
    )
    sock.sendall(request.encode())
    return sock


class Watcher:
    """Reads one stream and remembers the last `viewers` count it carried."""

    def __init__(self, sock):
        self.sock = sock
        self.buffer = b""
        self.viewers = None

    def read_until(self, wanted, deadline):
        while self.viewers != wanted:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"viewers stayed {self.viewers}, wanted {wanted}")
            self.sock.settimeout(remaining)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the watcher's stream ended")
            self.buffer += chunk
            while b"\n\n" in self.buffer:
                event, self.buffer = self.buffer.split(b"\n\n", 1)
                lines = event.split(b"\n")
                if b"event: viewers" not in lines:
                    continue
                for line in lines:
                    if line.startswith(b"data: "):
                        self.viewers = json.loads(line[6:])["viewers"]


def percentiles(samples):
    ordered = sorted(samples)
    at = lambda q: ordered[min(len(ordered) - 1, int(len(ordered) * q))]
    return {"p50": at(0.5), "max": ordered[-1]}


def main():
    watch_base, join_base = sys.argv[1], sys.argv[2]
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 10
    joiners = int(sys.argv[4]) if len(sys.argv) > 4 else 5
    video = f"counts_{int(time.time() * 1000) % 10**9}"
    watcher = Watcher(open_stream(watch_base, video))
    watcher.read_until(1, time.monotonic() + WAIT)
    joins, leaves = [], []
    for _ in range(rounds):
        started = time.monotonic()
        opened = [open_stream(join_base, video) for _ in range(joiners)]
        watcher.read_until(1 + joiners, started + WAIT)
        joins.append(round((time.monotonic() - started) * 1000, 1))
        # Let every count settle before the leave is timed (a viewers event comes at most
        # once a second per video).
        time.sleep(1.5)
        started = time.monotonic()
        for sock in opened:
            sock.close()
        watcher.read_until(1, started + WAIT)
        leaves.append(round((time.monotonic() - started) * 1000, 1))
        time.sleep(1.5)
    print(
        json.dumps(
            {
                "scenario": "viewer-counts",
                "ok": len(joins) == rounds and len(leaves) == rounds,
                "rounds": rounds,
                "joiners": joiners,
                "join_ms": joins,
                "leave_ms": leaves,
                "join": percentiles(joins),
                "leave": percentiles(leaves),
            }
        )
    )


if __name__ == "__main__":
    main()
