"""Prometheus metrics (/metrics): HTTP requests and latencies counted by the app, and
the scheduler's counters read at scrape time."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self, scheduler_of):
        """scheduler_of(): the running Scheduler, or None while the model loads."""
        self.registry = CollectorRegistry()
        self.requests = Counter("hearthlm_http_requests", "HTTP requests by endpoint and status code",
                                ["endpoint", "status"], registry=self.registry)
        self.time_to_first_token = Histogram(
            "hearthlm_time_to_first_token_seconds", "From a request's arrival to its first token",
            buckets=LATENCY_BUCKETS, registry=self.registry)
        self.request_seconds = Histogram(
            "hearthlm_request_duration_seconds", "From a request's arrival to its last token",
            buckets=LATENCY_BUCKETS, registry=self.registry)
        self.registry.register(_SchedulerCollector(scheduler_of))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _SchedulerCollector:
    def __init__(self, scheduler_of):
        self.scheduler_of = scheduler_of

    def collect(self):
        s = self.scheduler_of()
        if s is None:
            return
        st = s.stats
        for name, doc, value in (
                ("hearthlm_prompt_tokens", "Prompt tokens of admitted requests", st.prompt_tokens),
                ("hearthlm_cached_prompt_tokens", "Prompt tokens found in a slot's cache", st.cached_tokens),
                ("hearthlm_prefilled_tokens", "Tokens fed to the model (prompts and generated)",
                 st.prefilled_tokens),
                ("hearthlm_completion_tokens", "Generated tokens", st.completion_tokens),
                ("hearthlm_draft_tokens", "Tokens drafted by speculative decoding", st.drafted_tokens),
                ("hearthlm_draft_accepted_tokens", "Drafted tokens the model kept", st.accepted_tokens),
                ("hearthlm_forward_steps", "Scheduler steps (one forward over the busy slots)", st.steps)):
            yield CounterMetricFamily(name, doc, value=value)
        finished = CounterMetricFamily("hearthlm_requests_finished", "Requests finished, by reason",
                                       labels=["reason"])
        for reason, count in sorted(st.finished.items()):
            finished.add_metric([reason], count)
        yield finished
        for name, doc, value in (
                ("hearthlm_queue_depth", "Requests waiting for a slot", s.queue_depth),
                ("hearthlm_slots", "Slots (sequences run together)", len(s.slots)),
                ("hearthlm_slots_busy", "Slots serving a request", s.busy_slots),
                ("hearthlm_batch_size", "Slots in the last scheduler step", st.batch_size),
                ("hearthlm_tokens_per_second", "Generated tokens per second over the last 10 s",
                 st.tokens_per_second)):
            yield GaugeMetricFamily(name, doc, value=value)
