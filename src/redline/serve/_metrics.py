"""The server's counters, in Prometheus' text exposition format (version 0.0.4).

A few counters and two histograms need no client library: the format is lines of
``name{label="value"} number`` under ``# HELP`` and ``# TYPE`` headers.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence

__all__ = ["Histogram", "Metrics"]

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
ROUND_BUCKETS = (0, 1, 2, 3, 4, 5, 10)


class Histogram:
    """Cumulative buckets, a sum and a count, per label value."""

    def __init__(self, buckets: Sequence[float]) -> None:
        self.buckets = tuple(buckets)
        self.counts: dict[str, list[int]] = {}
        self.sums: dict[str, float] = {}

    def observe(self, label: str, value: float) -> None:
        """Count one observation."""
        counts = self.counts.setdefault(label, [0] * (len(self.buckets) + 1))
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                counts[i] += 1
        counts[-1] += 1
        self.sums[label] = self.sums.get(label, 0.0) + value

    def lines(self, name: str, label: str) -> list[str]:
        """The exposition lines of every label value."""
        out = []
        for value, counts in sorted(self.counts.items()):
            for bound, count in zip((*self.buckets, math.inf), counts, strict=True):
                le = "+Inf" if bound == math.inf else f"{bound:g}"
                out.append(f'{name}_bucket{{{label}="{value}",le="{le}"}} {count}')
            out.append(f'{name}_sum{{{label}="{value}"}} {self.sums[value]:.6f}')
            out.append(f'{name}_count{{{label}="{value}"}} {counts[-1]}')
        return out


class Metrics:
    """What the server counts. Label values are run names, HTTP statuses, stop reasons
    and token kinds: a bounded set (an unknown model is counted as ``unknown``)."""

    def __init__(self) -> None:
        self.requests: Counter[tuple[str, int]] = Counter()
        self.stop_reasons: Counter[tuple[str, str]] = Counter()
        self.tokens: Counter[tuple[str, str]] = Counter()
        self.llm_calls: Counter[str] = Counter()
        self.passthrough: Counter[tuple[str, str]] = Counter()
        self.rounds = Histogram(ROUND_BUCKETS)
        self.latency = Histogram(LATENCY_BUCKETS)

    def render(self, gauges: dict[str, tuple[str, Callable[[], float]]]) -> str:
        """The exposition text, with `gauges` (name → help, value) read now."""
        lines: list[str] = []

        def family(name: str, kind: str, help: str, body: list[str]) -> None:
            lines.extend([f"# HELP {name} {help}", f"# TYPE {name} {kind}", *body])

        family("redline_serve_requests_total", "counter",
               "Chat requests answered, by model and HTTP status.",
               [f'redline_serve_requests_total{{model="{m}",status="{s}"}} {n}'
                for (m, s), n in sorted(self.requests.items())])
        family("redline_serve_stop_reasons_total", "counter",
               "Refine runs finished, by model and stop reason.",
               [f'redline_serve_stop_reasons_total{{model="{m}",reason="{r}"}} {n}'
                for (m, r), n in sorted(self.stop_reasons.items())])
        family("redline_serve_tokens_total", "counter",
               "Tokens spent by refine runs (every call of the loop), by model and kind.",
               [f'redline_serve_tokens_total{{model="{m}",kind="{k}"}} {n}'
                for (m, k), n in sorted(self.tokens.items())])
        family("redline_serve_llm_calls_total", "counter",
               "LLM calls made by refine runs, by model.",
               [f'redline_serve_llm_calls_total{{model="{m}"}} {n}'
                for m, n in sorted(self.llm_calls.items())])
        family("redline_serve_passthrough_total", "counter",
               "Requests passed through to the upstream model, by model and reason.",
               [f'redline_serve_passthrough_total{{model="{m}",reason="{r}"}} {n}'
                for (m, r), n in sorted(self.passthrough.items())])
        family("redline_serve_rounds", "histogram", "Rounds per refine run, by model.",
               self.rounds.lines("redline_serve_rounds", "model"))
        family("redline_serve_request_seconds", "histogram",
               "Seconds from a chat request's arrival to its answer, by model.",
               self.latency.lines("redline_serve_request_seconds", "model"))
        for name, (help, value) in gauges.items():
            family(name, "gauge", help, [f"{name} {value():g}"])
        return "\n".join(lines) + "\n"
