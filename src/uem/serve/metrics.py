"""Prometheus metrics, written by hand in the text exposition format (version 0.0.4).

Why by hand: four metric families do not justify a dependency. Labels are bounded: `route` is the
matched route's template (never the raw path), `domain` only ever a domain of the bundle (counted
after the domain was checked), `status` an HTTP status code. With several uvicorn workers, each
process keeps and serves its own numbers (a scrape sees one worker).
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections import defaultdict

# Seconds; a query on the int8 encoder takes milliseconds, an add of many pictures seconds.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs: tuple[tuple[str, str], ...]) -> str:
    if not pairs:
        return ""
    return "{" + ",".join(f'{k}="{_escape(str(v))}"' for k, v in pairs) + "}"


def _num(v: float) -> str:
    if v == float("inf"):
        return "+Inf"
    return repr(float(v)) if not float(v).is_integer() else str(int(v))


class Metrics:
    """Counters and one latency histogram, safe to update from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple, int] = defaultdict(int)          # (method, route, status)
        self._hist: dict[str, list[int]] = {}                        # route -> bucket counts
        self._hist_sum: dict[str, float] = defaultdict(float)
        self._hist_count: dict[str, int] = defaultdict(int)
        self._queries: dict[tuple, int] = defaultdict(int)           # (domain, outcome)
        self._added: dict[str, int] = defaultdict(int)               # domain -> items
        self._started = time.time()

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self._requests[(method, route, str(status))] += 1
            counts = self._hist.setdefault(route, [0] * (len(BUCKETS) + 1))
            counts[bisect_left(BUCKETS, seconds)] += 1
            self._hist_sum[route] += seconds
            self._hist_count[route] += 1

    def observe_query(self, domain: str, accepted: bool) -> None:
        with self._lock:
            self._queries[(domain, "match" if accepted else "no_match")] += 1

    def observe_add(self, domain: str, added: int) -> None:
        with self._lock:
            self._added[domain] += int(added)

    def render(self, gauges: dict[str, tuple[str, dict[tuple, float]]] | None = None) -> str:
        """The exposition text; `gauges`: name -> (help, {label pairs: value}) read at scrape time."""
        lines: list[str] = []

        def family(name: str, kind: str, help_: str) -> None:
            lines.append(f"# HELP {name} {help_}")
            lines.append(f"# TYPE {name} {kind}")

        with self._lock:
            family("uem_http_requests_total", "counter", "HTTP requests by method, route and status.")
            for (method, route, status), n in sorted(self._requests.items()):
                lines.append(f"uem_http_requests_total{_labels((('method', method), ('route', route), ('status', status)))} {n}")
            family("uem_http_request_duration_seconds", "histogram", "Time to answer a request, by route.")
            for route in sorted(self._hist):
                cum = 0
                for le, c in zip((*BUCKETS, float("inf")), self._hist[route]):
                    cum += c
                    lines.append("uem_http_request_duration_seconds_bucket"
                                 f"{_labels((('route', route), ('le', _num(le))))} {cum}")
                lab = _labels((("route", route),))
                lines.append(f"uem_http_request_duration_seconds_sum{lab} {_num(self._hist_sum[route])}")
                lines.append(f"uem_http_request_duration_seconds_count{lab} {self._hist_count[route]}")
            family("uem_queries_total", "counter", "Answered queries by target domain and outcome (match, no_match).")
            for (domain, outcome), n in sorted(self._queries.items()):
                lines.append(f"uem_queries_total{_labels((('domain', domain), ('outcome', outcome)))} {n}")
            family("uem_query_rejections_total", "counter", "Queries answered \"no match\", by target domain.")
            for (domain, outcome), n in sorted(self._queries.items()):
                if outcome == "no_match":
                    lines.append(f"uem_query_rejections_total{_labels((('domain', domain),))} {n}")
            family("uem_items_added_total", "counter", "Pictures added through the service, by domain.")
            for domain, n in sorted(self._added.items()):
                lines.append(f"uem_items_added_total{_labels((('domain', domain),))} {n}")
        family("uem_process_start_time_seconds", "gauge", "When this server process started (Unix time).")
        lines.append(f"uem_process_start_time_seconds {_num(self._started)}")
        for name, (help_, values) in (gauges or {}).items():
            family(name, "gauge", help_)
            for pairs, v in sorted(values.items()):
                lines.append(f"{name}{_labels(pairs)} {_num(v)}")
        return "\n".join(lines) + "\n"
