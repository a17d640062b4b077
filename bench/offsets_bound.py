#!/usr/bin/env python3
"""What reading a window by STARTPOSITION in LastUpdatedTime order can cost on given data: a bound,
not a run (issue 15 asks, where a shape cannot reach its goal, for the bound and the figure).

pg_qbo reads a counted window by offsets, consecutive pages overlapping (crates/qbo/src/offsets.rs):
page k + 1 is taken only if it starts in a second before the last second of page k and ends after
it. A boundary where one second holds more records than the overlap fails that test and costs one
more request (the time cursor reads the rest of that second). This script replays the rule on the
sorted LastUpdatedTime values of a data set (no shuffling needed: a failure depends only on how
many records share the boundary's second) and prints, for fixed overlaps and for pg_qbo's adaptive
one (doubled after a failed boundary, halved after 16 proven ones, issuing 10 pages ahead), the
pages, the failed boundaries and the requests per 100 data pages.

  python3 bench/offsets_bound.py TRUTH.json [PAGE]

TRUTH.json: the emulator's /__emulator/truth/<realm>/<entity> answer (a list of records with
LastUpdatedTime), e.g. from `qbo-emulator --records Invoice=100000 --no-big-burst`.
"""
import datetime as dt
import json
import math
import sys


def fails(lut, start_prev, start, page):
    """True when the page at `start` (0-based) does not continue the page at `start_prev`."""
    n = len(lut)
    f = lut[min(start_prev + page - 1, n - 1)]
    end = min(start + page, n)
    first, last, full = lut[start], lut[end - 1], end - start == page
    return not (first < f and (last > f or not full))


def fixed(lut, page, overlap):
    n, k, failed = len(lut), 0, 0
    while k * (page - overlap) < n:
        if k > 0 and fails(lut, (k - 1) * (page - overlap), k * (page - overlap), page):
            failed += 1
        k += 1
    return k, failed


def adaptive(lut, page, ahead=10):
    n = len(lut)
    lo, hi = max(2, page // 100), page // 4
    overlap, proven, failed = lo, 0, 0
    starts = [0]
    for _ in range(ahead - 1):
        starts.append(starts[-1] + page - overlap)
    k = 0
    while k < len(starts) and starts[k] < n:
        if k > 0:
            if fails(lut, starts[k - 1], starts[k], page):
                failed += 1
                overlap, proven = min(hi, overlap * 2), 0
            else:
                proven += 1
                if proven >= 16:
                    overlap, proven = max(lo, overlap // 2), 0
        starts.append(starts[-1] + page - overlap)
        k += 1
    return k, failed


def main():
    recs = json.load(open(sys.argv[1]))
    page = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    lut = sorted(int(dt.datetime.fromisoformat(r["LastUpdatedTime"]).timestamp()) for r in recs)
    n = len(lut)
    data = math.ceil(n / page)
    per_second = {}
    for t in lut:
        per_second[t] = per_second.get(t, 0) + 1
    print(f"{n} records in {len(per_second)} seconds; {data} data pages of {page}")
    for m in (10, 20, 40, 80):
        share = sum(v for v in per_second.values() if v > m) / n
        print(f"  records in seconds holding more than {m}: {100 * share:.1f} %")
    print(f"{'overlap':>10} {'pages':>6} {'failed':>7} {'requests':>9} {'overhead':>9}")
    rows = [(str(m), *fixed(lut, page, m)) for m in (2, 10, 20, 40, 80, 130)]
    rows.append(("adaptive", *adaptive(lut, page)))
    for name, pages, failed in rows:
        req = pages + failed + 1  # and the window's count
        print(f"{name:>10} {pages:>6} {failed:>7} {req:>9} {100 * (req - data) / data:>8.1f}%")


if __name__ == "__main__":
    main()
