"""Optional Slack-compatible webhook for alerts (urllib, no extra dependency).

:meth:`WebhookNotifier.submit` only puts the alert on a bounded queue and returns at once; one
worker thread POSTs ``{"text": ..., "blocks": [...]}`` with a timeout and retries with
exponential backoff. A dead, slow or failing webhook therefore never stalls the monitor: when
the queue is full, alerts are dropped and counted; every outcome is counted in :attr:`stats`.
The URL (Slack's carries a token) and the configured headers are secrets: logs show only the
scheme and host.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import urllib.error
import urllib.request
from collections import Counter
from typing import Any
from urllib.parse import urlsplit

from netanomaly.monitor.config import SEVERITY_RANK, WebhookConfig

log = logging.getLogger(__name__)

_STOP = object()
_EMOJI = {"info": ":information_source:", "warning": ":warning:", "critical": ":rotating_light:"}


class PermanentWebhookError(Exception):
    """The webhook refused the request in a way a retry will not fix (HTTP 4xx but 408/429)."""


def slack_payload(alert: dict[str, Any], blocks: bool = True) -> dict[str, Any]:
    """The Slack incoming-webhook JSON for a kpi-alerts record."""
    sev = str(alert.get("severity", "info"))
    title = f"[{sev.upper()}] {alert.get('rule')}"
    text = f"{_EMOJI.get(sev, '')} {title}: {alert.get('message')}".strip()
    payload: dict[str, Any] = {"text": text}
    if blocks:
        context = (
            f"key `{alert.get('key')}` | window {alert.get('window_start')} - {alert.get('window_end')} | "
            f"model {alert.get('model_version')} | alert {alert.get('alert_id')}"
        )
        payload["blocks"] = [
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*{title}*\n{alert.get('message')}"}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": context}]},
        ]
    return payload


def redact_url(url: str) -> str:
    """``scheme://host[:port]/...``: enough to say where, without the token in the path."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}/..."


class WebhookNotifier:
    """Posts alerts to a webhook from its own thread; see the module docstring.

    ``stats`` counts: submitted, sent, failed (gave up after the retries), retries, dropped
    (queue full or left at stop), skipped (under ``min_severity`` or no URL).
    """

    def __init__(self, cfg: WebhookConfig) -> None:
        self.cfg = cfg
        self.url = str(cfg.url) if cfg.url is not None else None
        self.stats: Counter[str] = Counter(
            dict.fromkeys(("submitted", "sent", "failed", "retries", "dropped", "skipped"), 0)
        )
        self._q: queue.Queue[Any] = queue.Queue(maxsize=cfg.queue_size)
        self._abort = threading.Event()
        self._thread: threading.Thread | None = None
        self._logged_failure = False

    @property
    def enabled(self) -> bool:
        """True when a URL is configured."""
        return self.url is not None

    def start(self) -> WebhookNotifier:
        """Start the worker thread (no-op without a URL)."""
        if self.enabled and self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="monitor-webhook", daemon=True)
            self._thread.start()
            log.info("webhook: alerts of severity >= %s go to %s", self.cfg.min_severity, redact_url(self.url or ""))
        return self

    def submit(self, alert: dict[str, Any]) -> bool:
        """Queue one kpi-alerts record for posting; never blocks. True when queued."""
        if not self.enabled or self._thread is None or self._abort.is_set():
            self.stats["skipped"] += 1
            return False
        if SEVERITY_RANK.get(str(alert.get("severity")), 0) < SEVERITY_RANK[self.cfg.min_severity]:
            self.stats["skipped"] += 1
            return False
        try:
            self._q.put_nowait(alert)
        except queue.Full:
            self.stats["dropped"] += 1
            return False
        self.stats["submitted"] += 1
        return True

    def stop(self, timeout_s: float = 10.0) -> None:
        """Deliver what is queued for up to ``timeout_s``, then give up (the rest counts as dropped)."""
        if self._thread is None:
            return
        try:
            self._q.put(_STOP, timeout=max(timeout_s, 0.01))
        except queue.Full:
            pass
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            self._abort.set()  # cancels backoff waits; a request in flight ends at its timeout
            self._thread.join(self.cfg.timeout_s + 1.0)
        while True:
            try:
                item = self._q.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP:
                self.stats["dropped"] += 1
        self._thread = None

    # ---------------------------------------------------------------------------------- worker
    def _loop(self) -> None:
        while True:
            item = self._q.get()
            if item is _STOP:
                return
            if self._abort.is_set():
                self.stats["dropped"] += 1
                continue
            self._deliver(item)

    def _deliver(self, alert: dict[str, Any]) -> None:
        body = json.dumps(slack_payload(alert, self.cfg.blocks)).encode("utf-8")
        last: BaseException | None = None
        for attempt in range(self.cfg.retries + 1):
            if attempt:
                self.stats["retries"] += 1
                if self._abort.wait(self.cfg.backoff_s * 2 ** (attempt - 1)):
                    break
            try:
                self._post(body)
            except PermanentWebhookError as e:
                self._failed(e)
                return
            except (OSError, ValueError) as e:  # URLError, HTTPError, timeouts, refused connections
                last = e
                continue
            self.stats["sent"] += 1
            return
        else:
            self._failed(last or RuntimeError("no attempt made"))
            return
        self.stats["dropped"] += 1  # aborted while waiting to retry

    def _failed(self, e: BaseException) -> None:
        self.stats["failed"] += 1
        if not self._logged_failure:
            self._logged_failure = True
            log.warning(
                "webhook %s failed (%s: %s); alerts keep flowing to Kafka, failures are counted",
                redact_url(self.url or ""),
                type(e).__name__,
                e,
            )

    def _post(self, body: bytes) -> None:
        headers = {"Content-Type": "application/json", "User-Agent": "netanomaly-monitor"}
        headers.update({k: v.get_secret_value() for k, v in self.cfg.headers.items()})
        req = urllib.request.Request(self.url or "", data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.cfg.timeout_s) as resp:
                resp.read()
        except urllib.error.HTTPError as e:
            if 400 <= e.code < 500 and e.code not in (408, 429):
                raise PermanentWebhookError(f"HTTP {e.code} {e.reason}") from e
            raise
