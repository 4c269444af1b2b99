"""Webhook against a real local HTTP server; dead and slow webhooks never block submit()."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from netanomaly.monitor.config import WebhookConfig
from netanomaly.monitor.webhook import WebhookNotifier, redact_url, slack_payload

SUBMIT_BUDGET_S = 0.05


def alert(i: int = 0, severity: str = "warning") -> dict:
    return {
        "alert_id": f"{i:024x}",
        "rule": "device_score",
        "rule_type": "score_over_threshold",
        "severity": severity,
        "key": f"device_score:dev-{i:03d}",
        "device_id": f"dev-{i:03d}",
        "kpi": None,
        "window_start": "2026-01-05T20:00:00.000Z",
        "window_end": "2026-01-05T20:10:00.000Z",
        "value": 0.9,
        "threshold": 0.1,
        "baseline": None,
        "message": f"dev-{i:03d}: score 0.9 over 0.1",
        "model_version": "ae-test",
        "created_at": "2026-01-05T20:10:05.000Z",
        "details": {},
    }


@contextmanager
def http_server(status: int = 200, delay_s: float = 0.0) -> Iterator[tuple[str, list[dict]]]:
    """A real HTTP server on 127.0.0.1 (port 0) recording POSTed JSON bodies and headers."""
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if delay_s:
                time.sleep(delay_s)
            received.append({"path": self.path, "headers": dict(self.headers), "json": json.loads(body)})
            try:
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b"ok")
            except OSError:
                pass  # the client gave up (timeout)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hooks/T000/SECRET", received
    finally:
        server.shutdown()
        server.server_close()


def free_port() -> int:
    """A port with nothing listening (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(cond, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


def timed_submit(n: WebhookNotifier, a: dict) -> tuple[bool, float]:
    t0 = time.perf_counter()
    ok = n.submit(a)
    return ok, time.perf_counter() - t0


def test_posts_slack_payload_with_secret_headers_to_a_real_server():
    with http_server() as (url, received):
        cfg = WebhookConfig(url=url, headers={"Authorization": "Bearer s3cret"}, min_severity="info")
        n = WebhookNotifier(cfg).start()
        assert n.submit(alert(1)) and n.submit(alert(2, "critical"))
        assert wait_for(lambda: len(received) == 2)
        n.stop(5)
    assert n.stats["sent"] == 2 and n.stats["failed"] == 0
    first = received[0]
    assert first["path"] == "/hooks/T000/SECRET"
    assert first["headers"]["Authorization"] == "Bearer s3cret"
    assert first["headers"]["Content-Type"] == "application/json"
    body = first["json"]
    assert body["text"].startswith(":warning: [WARNING] device_score: dev-001: score 0.9")
    assert body["blocks"][0]["type"] == "section" and "dev-001" in body["blocks"][0]["text"]["text"]
    assert "2026-01-05T20:00:00.000Z" in body["blocks"][1]["elements"][0]["text"]
    assert received[1]["json"]["text"].startswith(":rotating_light: [CRITICAL]")
    assert "SECRET" not in redact_url(url) and "s3cret" not in repr(cfg)


def test_min_severity_and_plain_text_payload():
    assert "blocks" not in slack_payload(alert(), blocks=False)
    with http_server() as (url, received):
        n = WebhookNotifier(WebhookConfig(url=url, min_severity="critical")).start()
        assert not n.submit(alert(1, "warning"))
        assert n.submit(alert(2, "critical"))
        assert wait_for(lambda: len(received) == 1)
        n.stop(5)
    assert n.stats["skipped"] == 1 and n.stats["sent"] == 1


def test_dead_webhook_never_blocks_submit_and_failures_are_counted():
    url = f"http://127.0.0.1:{free_port()}/hook"
    n = WebhookNotifier(WebhookConfig(url=url, retries=2, backoff_s=0.05, timeout_s=1.0, queue_size=10)).start()
    times = [timed_submit(n, alert(i))[1] for i in range(3)]
    assert max(times) < SUBMIT_BUDGET_S, times
    assert wait_for(lambda: n.stats["failed"] == 3, timeout_s=10)
    assert n.stats["retries"] == 6 and n.stats["sent"] == 0
    n.stop(1)


def test_slow_webhook_times_out_while_submit_returns_at_once_and_overflow_is_dropped():
    with http_server(delay_s=1.0) as (url, received):
        cfg = WebhookConfig(url=url, timeout_s=0.2, retries=1, backoff_s=0.01, queue_size=2)
        n = WebhookNotifier(cfg).start()
        results = [timed_submit(n, alert(i)) for i in range(6)]
        assert max(t for _, t in results) < SUBMIT_BUDGET_S, results
        # one in flight, two queued, the rest dropped (counted)
        assert 2 <= sum(ok for ok, _ in results) <= 3 and n.stats["dropped"] >= 3
        assert wait_for(lambda: n.stats["failed"] >= 1, timeout_s=5)
        t0 = time.monotonic()
        n.stop(0.3)  # gives up on what is left: stop is bounded too
        assert time.monotonic() - t0 < 0.3 + cfg.timeout_s + 1.5
    s = n.stats
    assert s["sent"] == 0 and s["failed"] + s["dropped"] == 6 and s["retries"] >= 1


def test_client_errors_are_not_retried():
    with http_server(status=404) as (url, received):
        n = WebhookNotifier(WebhookConfig(url=url, retries=3, backoff_s=0.01)).start()
        n.submit(alert())
        assert wait_for(lambda: n.stats["failed"] == 1)
        n.stop(1)
    assert n.stats["retries"] == 0 and len(received) == 1


def test_no_url_means_no_thread_and_nothing_sent():
    n = WebhookNotifier(WebhookConfig(url=None)).start()
    assert not n.enabled and not n.submit(alert()) and n.stats["skipped"] == 1
    n.stop(1)
