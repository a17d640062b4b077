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
37 ms a page on this machine with 0.5.0, about 18 ms since responses are parsed off the network
thread). With the count first, the first WINDOW seconds carry at most PER_SECOND - 1 pages, so one
request slot starts a page only at WINDOW: N / 1000 full pages then take one round more on some
slot, which no ordering of the same pages avoids.

The third line is what cutting the last pages smaller could reach (pg_qbo does not): the first F
pages full and sent as pg_qbo sends them, then the records left spread over one or two more
requests per slot so that every slot ends at the same moment (water-filling), with every request
within the overhead allowance (--allowance, 5 %), the best F.

The last two lines are bounds no schedule beats (a relaxation, solved exactly): each request slot
runs its requests back to back from its first start; a request of r rows (r <= --page) takes
latency + extra + r x per-row, whatever it is; consecutive pages share --overlap records; at most
data pages x (1 + allowance) requests in all; every answer's time known in advance, any page size,
any order, the per-second rule applied to the first WINDOW seconds only. What differs is when each
slot may start its first page:
- "learns the size first": a policy that sends at most one page before it knows how many records
  the window holds (a count, or any probe; a window of one page then costs two requests). The
  probe and page 1 go at 0, the other pages once the probe answers (after LATENCY), and with the
  probe one of the first PER_SECOND requests, one slot starts its first page only at WINDOW.
- "blind": every slot starts a page at 0, before anything is known (a window smaller than
  IN_FLIGHT pages then pays for the empty ones); its count, needed to end without empty pages,
  is left out, which only helps it.
--run-ms adds what a run spends before its first request and after its last answer.

The issue's model (a page 1.5 s, a count 0.3 s): --latency 0.3 --per-row 0.0012.
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
ap.add_argument("--allowance", type=float, default=0.05)
ap.add_argument("--run-ms", type=float, default=0.0)
a = ap.parse_args()


def schedule(count_first: bool, full_pages=None):
    """(end of the last request, requests, pages) for the window, greedy in issue order; with
    `full_pages`, only that many full pages, and the slots' free times instead."""
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
        if full_pages is not None and pages == full_pages:
            return sorted(max(f, ready) for f in slots), requests, position
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


def balanced_tail():
    """(end, requests) at best when the records after the first F full pages are cut to balance
    the slots (see the module documentation), over every F."""
    data = -(-a.n // a.page)
    cap_requests = int(data * (1 + a.allowance) + 1e-9)
    fixed = a.latency + a.extra_ms / 1000
    step = a.page - a.overlap
    best = None
    for f_pages in range(max(0, data - 3 * a.in_flight), data + 1):
        free, requests, position = schedule(True, f_pages)
        left = a.n - position + 1 + a.overlap  # the first tail page repeats the overlap too
        if left <= 0:
            continue

        def capacity(t, extra):
            # rows the slots can take by t: one request each where it fits, and a second one on
            # the `extra` slots where it adds most; (rows, requests)
            rows, used, gains = 0.0, 0, []
            for fr in free:
                one = min(step, (t - fr - fixed) / a.per_row)
                if one <= 0:
                    continue
                two = min(2 * step, (t - fr - 2 * fixed) / a.per_row)
                rows += one
                used += 1
                gains.append(max(0.0, two - one))
            gains.sort(reverse=True)
            rows += sum(gains[:extra])
            used += sum(1 for g in gains[:extra] if g > 0)
            return rows, used

        budget = cap_requests - requests
        lo, hi = min(free), min(free) + 10
        for _ in range(60):
            mid = (lo + hi) / 2
            rows, used = capacity(mid, max(0, budget - a.in_flight))
            if rows >= left and used <= budget:
                hi = mid
            else:
                lo = mid
        rows, used = capacity(hi, max(0, budget - a.in_flight))
        if rows >= left and used <= budget and (best is None or hi < best[0]):
            best = (hi, requests + used, f_pages)
    return best


b = balanced_tail()
if b:
    end, requests, f_pages = b
    over = requests - -(-a.n // a.page)
    print(f"{'count first, tail balanced':26} ends at {end:6.2f} s: {100 * ceiling / end:5.1f} % of the ceiling in rows,"
          f" {requests} requests ({f_pages} full pages first), overhead {100 * over / -(-a.n // a.page):.1f} %"
          f" (at best: not what pg_qbo does)")


def lower_bound(starts, count_requests):
    """The least end time over every schedule of the relaxation above, slots starting at `starts`,
    `count_requests` of the request allowance spent on counts."""
    fixed = a.latency + a.extra_ms / 1000
    cap = int(-(-a.n // a.page) * (1 + a.allowance) + 1e-9) - count_requests
    low = float("-inf")

    def coverable(t):
        # most records the slots can cover by t with at most `cap` requests: a knapsack over the
        # slots of (requests on the slot, records it covers less the overlaps it repeats)
        best = [low] * (cap + 1)
        best[0] = 0.0
        for s in starts:
            options = []
            k = 1
            while k <= cap:
                rows = min(a.page * k, (t - s - k * fixed) / a.per_row)
                if rows <= 0:
                    break
                options.append((k, rows - a.overlap * k))
                k += 1
            nxt = best[:]
            for used in range(cap + 1):
                if best[used] == low:
                    continue
                for k, v in options:
                    if used + k <= cap and best[used] + v > nxt[used + k]:
                        nxt[used + k] = best[used] + v
            best = nxt
        return max(best) + a.overlap  # the first page repeats nothing

    lo, hi = 0.0, 4 * ceiling + 10
    for _ in range(50):
        mid = (lo + hi) / 2
        if coverable(mid) >= a.n:
            hi = mid
        else:
            lo = mid
    return hi + a.run_ms / 1000


informed = lower_bound([0.0] + [a.latency] * (a.in_flight - 2) + [a.window], 1)
blind = lower_bound([0.0] * a.in_flight, 0)
for label, end in (("bound, learns the size first", informed), ("bound, blind first round", blind)):
    print(f"{label:26} ends at {end:6.2f} s: {100 * ceiling / end:5.1f} % of the ceiling in rows at most"
          f" (relaxation: exact times, any page size; run {a.run_ms:.0f} ms)")
