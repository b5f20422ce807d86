"""A stand-in for Lago's HTTP API that enforces the rules llmfleet relies on:

- `POST /api/v1/events/batch`: at most 100 events; `transaction_id` unique per
  `external_subscription_id` — a resend (or a duplicate within the batch) rejects the
  whole batch with 422 `validation_errors` and `error_details` keyed by event index,
  `{"transaction_id": ["value_already_exist"]}`; timestamps must be Unix numbers;
  property values must be strings.
- `GET /api/v1/subscriptions/{external_id}`: the subscription's status (from
  `subscriptions`) and `external_customer_id` (from `customers`, else "cus-<id>");
  lookups are counted per subscription in `lookups`.
- `GET /api/v1/customers/{external_customer_id}/current_usage?external_subscription_id=`:
  `total_amount_cents` from `usage_cents`.
- Switchable failures, for every route: `mode` = "ok" | "5xx" | "429" (with
  `x-ratelimit-reset`) | "hang" (answers after `hang_seconds`).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

API_KEY = "lago-test-key"


@dataclass
class LagoStandIn:
    mode: str = "ok"
    reset_seconds: int = 1
    hang_seconds: float = 30.0
    #: (external_subscription_id, transaction_id) -> event
    events: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    subscriptions: dict[str, str] = field(default_factory=dict)
    #: external_subscription_id -> external_customer_id
    customers: dict[str, str] = field(default_factory=dict)
    #: external_subscription_id -> the current period's total_amount_cents
    usage_cents: dict[str, int] = field(default_factory=dict)
    #: external_subscription_id -> GET /subscriptions/{id} requests (failed ones too)
    lookups: dict[str, int] = field(default_factory=dict)
    requests: int = 0
    rejected_batches: int = 0
    #: Events accepted over all requests: more than len(events) would be double billing.
    accepted: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                status, headers, payload = stand_in.handle_batch(
                    self.headers.get("authorization"), body
                )
                self._reply(status, headers, payload)

            def do_GET(self) -> None:
                status, headers, payload = stand_in.handle_get(
                    self.headers.get("authorization"), self.path
                )
                self._reply(status, headers, payload)

            def _reply(self, status: int, headers: dict[str, str], payload: Any) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def handle_get(self, authorization: str | None, path: str) -> tuple[int, dict[str, str], Any]:
        url = urlsplit(path)
        parts = url.path.strip("/").split("/")
        with self.lock:
            if parts[:3] == ["api", "v1", "subscriptions"] and len(parts) == 4:
                self.lookups[unquote(parts[3])] = self.lookups.get(unquote(parts[3]), 0) + 1
            mode = self.mode
        failure = self._failure(mode)
        if failure is not None:
            return failure
        if authorization != f"Bearer {API_KEY}":
            return 401, {}, {"status": 401, "error": "Unauthorized"}
        if parts[:3] == ["api", "v1", "subscriptions"] and len(parts) == 4:
            external_id = unquote(parts[3])
            status = self.subscriptions.get(external_id)
            if status is not None:
                customer = self.customers.get(external_id, f"cus-{external_id}")
                sub = {"external_id": external_id, "status": status}
                return 200, {}, {"subscription": {**sub, "external_customer_id": customer}}
        if parts[:3] == ["api", "v1", "customers"] and parts[4:] == ["current_usage"]:
            [external_id] = parse_qs(url.query).get("external_subscription_id", [""])
            if external_id in self.subscriptions:
                cents = self.usage_cents.get(external_id, 0)
                return 200, {}, {"customer_usage": {"total_amount_cents": cents}}
        return 404, {}, {"status": 404, "error": "Not Found"}

    def _failure(self, mode: str) -> tuple[int, dict[str, str], Any] | None:
        if mode == "hang":
            time.sleep(self.hang_seconds)
        if mode == "5xx":
            return 503, {}, {"status": 503, "error": "Service Unavailable"}
        if mode == "429":
            return 429, {"x-ratelimit-reset": str(self.reset_seconds)}, {"status": 429}
        return None

    def handle_batch(
        self, authorization: str | None, body: bytes
    ) -> tuple[int, dict[str, str], Any]:
        with self.lock:
            self.requests += 1
            mode = self.mode
        failure = self._failure(mode)
        if failure is not None:
            return failure
        if authorization != f"Bearer {API_KEY}":
            return 401, {}, {"status": 401, "error": "Unauthorized"}
        events = json.loads(body).get("events")
        if not isinstance(events, list) or not 1 <= len(events) <= 100:
            return 422, {}, _invalid({"events": ["too_many_events_or_empty"]})
        with self.lock:
            details = self._check(events)
            if details:
                self.rejected_batches += 1
                return 422, {}, _invalid(details)
            for event in events:
                key = (event["external_subscription_id"], event["transaction_id"])
                self.events[key] = event
            self.accepted += len(events)
        return 200, {}, {"events": events}

    def _check(self, events: list[Any]) -> dict[str, Any]:
        details: dict[str, Any] = {}
        seen: set[tuple[str, str]] = set()
        for index, event in enumerate(events):
            problems: dict[str, list[str]] = {}
            key = (event.get("external_subscription_id"), event.get("transaction_id"))
            if key in self.events or key in seen:
                problems["transaction_id"] = ["value_already_exist"]
            seen.add(key)
            if not isinstance(event.get("timestamp"), int | float) or isinstance(
                event.get("timestamp"), bool
            ):
                problems["timestamp"] = ["invalid_timestamp"]
            props = event.get("properties") or {}
            if any(not isinstance(v, str) for v in props.values()):
                problems["properties"] = ["invalid_value"]
            if not event.get("code"):
                problems["code"] = ["value_is_mandatory"]
            if problems:
                details[str(index)] = problems
        return details


def _invalid(details: dict[str, Any]) -> dict[str, Any]:
    return {
        "status": 422,
        "error": "Unprocessable Entity",
        "code": "validation_errors",
        "error_details": details,
    }
