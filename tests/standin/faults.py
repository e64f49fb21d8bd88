"""A fault-injecting proxy in front of the emulator, on loopback, switched on per test.

The emulator never runs out of capacity and answers Service Quotas for VPC only. A test that needs
AWS to say no points the AWS endpoint of the process under test at this proxy instead of the
emulator (AWS_ENDPOINT_URL, as tests/conftest.py points it at the emulator) and chooses:

  refuse(action, code, message, status=400, times=None, **params)
      answer the EC2 query call `action` with the AWS error `code` when every given request
      parameter matches (e.g. InstanceType="m5.large", SubnetId="subnet-..."); `times` answers only
      that many matching calls (None: all of them)
  quota(code, value, name)
      answer Service Quotas GetServiceQuota / GetAWSDefaultServiceQuota for ec2 `code` with `value`

Everything else is passed to the emulator unchanged. `calls` records (action, params, refused code)
for every EC2 query call and every Service Quotas call, so a test can see what was tried.

    with faults.Proxy(emulator.URL) as proxy:
        proxy.refuse("RunInstances", "InsufficientInstanceCapacity", "...", InstanceType="m5.large")
        env["AWS_ENDPOINT_URL"] = proxy.url
"""
from __future__ import annotations

import http.server
import json
import threading
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from typing import Optional

# The emulator is on loopback: never through a proxy of the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding"}


@dataclass
class Refusal:
    action: str
    code: str
    message: str
    status: int
    params: dict
    times: Optional[int]

    def matches(self, action: str, params: dict) -> bool:
        if action != self.action or self.times == 0:
            return False
        return all(params.get(k) == v for k, v in self.params.items())


def _flat_params(params: dict) -> dict:
    """EC2 query parameters under their short names too: SubnetId for NetworkInterface.1.SubnetId."""
    flat = dict(params)
    for key, value in params.items():
        flat.setdefault(key.rsplit(".", 1)[-1], value)
    return flat


class Proxy:
    def __init__(self, upstream: str):
        self.upstream = upstream.rstrip("/")
        self.refusals: list[Refusal] = []
        self.quotas: dict[str, dict] = {}
        self.calls: list[tuple[str, dict, Optional[str]]] = []
        self.lock = threading.Lock()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]

    # ---- what the test chooses
    def refuse(self, action: str, code: str, message: str = "", status: int = 400, times: Optional[int] = None,
               **params) -> None:
        with self.lock:
            self.refusals.append(Refusal(action, code, message or code, status, params, times))

    def quota(self, code: str, value: float, name: str = "") -> None:
        with self.lock:
            self.quotas[code] = {"ServiceCode": "ec2", "ServiceName": "Amazon Elastic Compute Cloud (Amazon EC2)",
                                 "QuotaCode": code, "QuotaName": name or code, "Value": float(value),
                                 "Unit": "None", "Adjustable": True, "GlobalQuota": False}

    def tried(self, action: str) -> list[tuple[dict, Optional[str]]]:
        with self.lock:
            return [(params, refused) for name, params, refused in self.calls if name == action]

    # ---- life
    def __enter__(self) -> "Proxy":
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    # ---- decisions, called by the handler
    def ec2_refusal(self, action: str, params: dict) -> Optional[Refusal]:
        with self.lock:
            for refusal in self.refusals:
                if refusal.matches(action, params):
                    if refusal.times is not None:
                        refusal.times -= 1
                    self.calls.append((action, params, refusal.code))
                    return refusal
            self.calls.append((action, params, None))
            return None

    def quota_answer(self, target: str, body: dict) -> Optional[dict]:
        with self.lock:
            self.calls.append((target, body, None))
            if body.get("ServiceCode") == "ec2" and body.get("QuotaCode") in self.quotas:
                return {"Quota": self.quotas[body["QuotaCode"]]}
            return None


def _handler(proxy: Proxy):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args):  # noqa: A002  (quiet)
            pass

        def _reply(self, status: int, body: bytes, ctype: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
            self.end_headers()
            self.wfile.write(body)

        def _forward(self, body: bytes) -> None:
            req = urllib.request.Request(proxy.upstream + self.path, data=body if self.command != "GET" else None,
                                         method=self.command,
                                         headers={k: v for k, v in self.headers.items() if k.lower() != "host"})
            try:
                with _OPENER.open(req, timeout=120) as resp:
                    status, headers, data = resp.status, resp.headers, resp.read()
            except urllib.error.HTTPError as exc:
                status, headers, data = exc.code, exc.headers, exc.read()
            self.send_response(status)
            for key, value in headers.items():
                if key.lower() not in _HOP_BY_HOP:
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _handle(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            target = self.headers.get("X-Amz-Target", "")
            if target.startswith("ServiceQuotasV20190624."):
                operation = target.split(".", 1)[1]
                if operation in ("GetServiceQuota", "GetAWSDefaultServiceQuota"):
                    answer = proxy.quota_answer(operation, json.loads(body or b"{}"))
                    if answer is not None:
                        return self._reply(200, json.dumps(answer).encode(), "application/x-amz-json-1.1")
            elif self.command == "POST" and body.startswith(b"Action="):
                params = _flat_params({k: v[0] for k, v in urllib.parse.parse_qs(body.decode()).items()})
                refusal = proxy.ec2_refusal(params.get("Action", ""), params)
                if refusal is not None:
                    xml = ("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Errors><Error><Code>%s</Code>"
                           "<Message>%s</Message></Error></Errors><RequestID>%s</RequestID></Response>"
                           % (refusal.code, refusal.message, uuid.uuid4()))
                    return self._reply(refusal.status, xml.encode(), "text/xml")
            return self._forward(body)

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle  # noqa: N815

    return Handler
