"""`GET /metrics`: Prometheus text format (counters, gauges, histograms), from the engine thread's numbers."""
import threading
import time

TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
ITL_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
PREFIX = "mindformers_hf"


class Histogram:
    def __init__(self, buckets):
        self.buckets, self.counts, self.sum, self.count = buckets, [0] * len(buckets), 0.0, 0

    def observe(self, value):
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1
        self.sum += value
        self.count += 1

    def lines(self, name):
        out = [f'{name}_bucket{{le="{bound}"}} {count}' for bound, count in zip(self.buckets, self.counts)]
        return out + [f'{name}_bucket{{le="+Inf"}} {self.count}', f"{name}_sum {self.sum}",
                      f"{name}_count {self.count}"]


class Metrics:
    """Latencies are observed on the engine thread when a step's outputs leave it; `render` reads a consistent
    copy under a lock (it runs on the event loop's thread)."""

    def __init__(self, engine):
        self.engine = engine
        self.lock = threading.Lock()
        self.ttft, self.itl = Histogram(TTFT_BUCKETS), Histogram(ITL_BUCKETS)
        self._seen = {}     # request id -> (arrival time, last token time, tokens seen)

    def arrived(self, request_id):
        self._seen[request_id] = (time.monotonic(), None, 0)

    def done(self, request_id):
        self._seen.pop(request_id, None)

    def tokens(self, out, now):
        arrival, last, seen = self._seen.get(out.request_id, (now, None, 0))
        total = sum(len(o.token_ids) for o in out.outputs)
        with self.lock:
            if last is None:
                self.ttft.observe(now - arrival)
            elif total > seen:
                self.itl.observe((now - last) / max(1, total - seen))
        self._seen[out.request_id] = (arrival, now, total)
        if out.finished:
            self.done(out.request_id)

    def render(self):
        engine = self.engine
        used, free = engine.kv_blocks()
        gauges = {"num_requests_running": len(engine.scheduler.running),
                  "num_requests_waiting": len(engine.scheduler.waiting),
                  "kv_blocks_used": used, "kv_blocks_free": free,
                  "kv_blocks_cached": engine.allocator.num_cached}
        counters = {"prompt_tokens_total": engine.stats["prompt_tokens"],
                    "generation_tokens_total": engine.stats["generation_tokens"],
                    "request_success_total": engine.stats["requests_finished"],
                    "num_preemptions_total": engine.scheduler.num_preemptions,
                    # vLLM's pair: prompt tokens looked up in the prefix cache, and those found there
                    "prefix_cache_queries_total": engine.allocator.queries,
                    "prefix_cache_hits_total": engine.allocator.hits}
        lines = []
        for kind, values in (("gauge", gauges), ("counter", counters)):
            for name, value in values.items():
                lines += [f"# TYPE {PREFIX}:{name} {kind}", f"{PREFIX}:{name} {value}"]
        with self.lock:
            for name, hist in (("time_to_first_token_seconds", self.ttft), ("inter_token_latency_seconds", self.itl)):
                lines.append(f"# TYPE {PREFIX}:{name} histogram")
                lines += hist.lines(f"{PREFIX}:{name}")
        return "\n".join(lines) + "\n"
