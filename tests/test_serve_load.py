"""A bounded load test on loopback: 200 requests from 16 concurrent clients against
`hearthlm serve` (a child process: 4 slots, a queue of 8). Every request completes or is
refused cleanly (429/503 with Retry-After and an OpenAI error object); afterwards no
slot or queue entry is left, the server's memory has not grown with the request count,
and it still answers."""
import concurrent.futures
import json
import resource
import time

import httpx

from serve_util import serve_process

REQUESTS, CLIENTS = 200, 16
BACKOFF = 0.1  # seconds a refused client waits before its next request (shorter than Retry-After)
QUESTIONS = ["What is 12 plus 7?", "Reverse the word lemon.", "What is 6 times 7?", "Compute 89 + 54.",
             "How many letters are in the word banana?", "Which is larger, 17 or 71?"]


def one_request(url: str, i: int) -> tuple[str, int]:
    """-> (outcome, completion tokens); outcome "ok" or "refused", anything else fails the test."""
    body = {"model": "hearthlm-demo", "messages": [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}],
            "max_tokens": 24, "temperature": 0.7, "seed": i}
    stream = i % 2 == 0
    if stream:
        body.update(stream=True, stream_options={"include_usage": True})
    with httpx.Client(timeout=60) as c:
        with c.stream("POST", url + "/v1/chat/completions", json=body) as r:
            raw = r.read()
    if r.status_code in (429, 503):
        error = json.loads(raw)["error"]
        assert r.headers["retry-after"] and set(error) == {"message", "type", "param", "code"}
        time.sleep(BACKOFF)
        return "refused", 0
    assert r.status_code == 200, raw
    if not stream:
        reply = json.loads(raw)
        assert reply["choices"][0]["finish_reason"] in ("stop", "length")
        return "ok", reply["usage"]["completion_tokens"]
    events = [line[6:] for line in raw.decode().split("\n\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[-2]["choices"][0]["finish_reason"] in ("stop", "length")
    return "ok", chunks[-1]["usage"]["completion_tokens"]


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def test_200_requests_from_16_clients():
    # one kernel thread: the server's event loop keeps a core (see bench/README.md, serve streams)
    with serve_process("--parallel", "4", "--queue", "8", "--threads", "1") as (url, proc):
        def run(n):
            with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
                return list(pool.map(lambda i: one_request(url, i), range(n)))

        run(2 * CLIENTS)  # warm up: every slot used, allocator pools filled
        rss_before = rss_mb(proc.pid)
        t0 = time.perf_counter()
        results = run(REQUESTS)
        seconds = time.perf_counter() - t0
        ok = sum(outcome == "ok" for outcome, _ in results)
        refused = sum(outcome == "refused" for outcome, _ in results)
        tokens = sum(n for _, n in results)
        print(f"\nload: {REQUESTS} requests from {CLIENTS} clients in {seconds:.1f} s: {ok} completed, "
              f"{refused} refused (429/503), {tokens} tokens generated, {tokens / seconds:.0f} tok/s")
        assert ok + refused == REQUESTS and ok > 0
        health = httpx.get(url + "/health").json()
        assert health == {"status": "ok", "slots": 4, "slots_busy": 0, "queue_depth": 0}, "a slot leaked"
        grown = rss_mb(proc.pid) - rss_before
        print(f"load: server RSS {rss_before:.0f} MB before, {grown:+.1f} MB after")
        assert grown < 32  # a leak per request (reply objects, sessions) would grow with the count
        assert proc.poll() is None
