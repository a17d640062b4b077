#!/usr/bin/env python3
"""What B2's latency model allows a window read by offsets, whatever the implementation.

B2 (bench/throughput.sh b2): a page of r rows takes LATENCY + r x PER_ROW (1.5 s for 1000), a
count LATENCY; at most IN_FLIGHT requests at once and, as qbo.max_requests_per_second does, at most
PER_SECOND requests started in any sliding WINDOW seconds (10 per 1.2 s). The ceiling counts
IN_FLIGHT full pages every 1.5 s. This script schedules the requests of one window of N records
the way pg_qbo sends them (the count first, then pages in order, each as soon as a request slot
and the per-second rule allow) and prints when the last one ends, next to the ceiling; and the
same without the count (every page guessed, which a small window pays for in wasted requests).

  python3 bench/b2_bound.py [N] [--overlap 5] [--extra-ms 0]

--extra-ms adds a turnaround per page (the emulator's and the client's own work; B2 measured about
37 ms a page on this machine). With the count first, the first WINDOW seconds carry at most
PER_SECOND - 1 pages, so one request slot starts a page only at WINDOW: N / 1000 full pages then
take one round more on some slot, which no ordering of the same pages avoids.
"""
import argparse
import heapq

ap = argparse.ArgumentParser()
ap.add_argument("n", nargs="?", type=int, default=100_000)
ap.add_argument("--page", type=int, default=1000)
ap.add_argument("--overlap", type=int, default=5)
ap.add_argument("--latency", type=float, default=0.100)
ap.add_argument("--per-row", type=float, default=0.0014)
ap.add_argument("--in-flight", type=int, default=10)
ap.add_argument("--per-second", type=int, default=10)
ap.add_argument("--window", type=float, default=1.2)
ap.add_argument("--extra-ms", type=float, default=0.0)
a = ap.parse_args()


def schedule(count_first: bool):
    """(end of the last request, requests, pages) for the window, greedy in issue order."""
    slots = [0.0] * a.in_flight
    starts = []  # request start times, for the per-second rule

    def start_at(t):
        # the earliest start >= t with fewer than per_second starts in the window before it
        while True:
            recent = [s for s in starts if s > t - a.window]
            if len(recent) < a.per_second:
                return t
            t = sorted(recent)[len(recent) - a.per_second] + a.window

    end, requests = 0.0, 0
    ready = 0.0
    if count_first:
        t = start_at(heapq.heappop(slots))
        starts.append(t)
        ready = t + a.latency  # pages go once the count is in
        heapq.heappush(slots, ready)
        requests += 1
    step = a.page - a.overlap
    position, pages = 1, 0
    while pages == 0 or position + a.overlap <= a.n:
        t = start_at(max(heapq.heappop(slots), ready))
        starts.append(t)
        rows = min(a.page, a.n - position + 1)
        done = t + a.latency + a.per_row * rows + a.extra_ms / 1000
        heapq.heappush(slots, done)
        end = max(end, done)
        requests += 1
        pages += 1
        position += step
    return end, requests, pages


full = a.latency + a.per_row * a.page
ceiling = a.n / a.page * full / a.in_flight
print(f"{a.n} records, pages of {a.page} overlapping by {a.overlap}: a full page takes {full:.3f} s;"
      f" {a.in_flight} in flight, {a.per_second} started per {a.window} s")
print(f"ceiling: {ceiling:.2f} s ({a.in_flight} full pages every {full:.3f} s)")
for label, count_first in (("count first (pg_qbo)", True), ("no count (pages guessed)", False)):
    end, requests, pages = schedule(count_first)
    over = requests - -(-a.n // a.page)
    print(f"{label:26} ends at {end:6.2f} s: {100 * ceiling / end:5.1f} % of the ceiling in rows,"
          f" {requests} requests ({pages} pages), overhead {100 * over / -(-a.n // a.page):.1f} %")
