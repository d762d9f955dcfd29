"""api_logs rows for the requests sync jobs make (gateway/sync/jobs/runner.py's
``log_call`` hook): written through the proxy's bookkeeping (metrics, writer, access log)
like proxied calls, with the job's name as the route and the tenant and external system of
the job. Headers and bodies are captured and redacted with the default capture policy."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from gateway.capture.exchange import Exchange
from gateway.capture.record import capture_headers, clean_text
from gateway.sync.jobs.runner import JobCall

if TYPE_CHECKING:
    from gateway.proxy.pipeline import Proxy


class JobCallLog:
    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.policy = proxy.default_policy

    def __call__(self, call: JobCall) -> None:
        policy = self.policy
        ex = Exchange(
            created_at=call.created_at,
            started=time.perf_counter() - call.duration_ms / 1000.0,
            request_id=call.request_id,
            method=call.method,
            path=clean_text(call.url.raw_path),
            query=policy.query(call.url.raw_query_string),
            request_headers=capture_headers(call.request_headers, policy.redact_headers),
            client_ip=None,
            user_agent=None,
        )
        ex.route, ex.upstream, ex.status = call.job, call.upstream, call.status
        ex.tenant_id, ex.external_system = str(call.tenant_id), call.external_system
        size = len(call.request_body)
        ex.request_body = policy.body(True, call.request_body, size, "application/json", "")
        ex.response_headers = capture_headers(call.response_headers, policy.redact_headers)
        answer = dict((k.lower(), v) for k, v in call.response_headers)
        ex.response_body = policy.body(
            True,
            call.response_body,
            len(call.response_body),
            answer.get("content-type", ""),
            answer.get("content-encoding", ""),
        )
        ex.upstream_ms = call.duration_ms
        if call.error_message is not None:
            ex.fail(call.error_code or "upstream_error", call.error_message)
        self.proxy.record(ex)
