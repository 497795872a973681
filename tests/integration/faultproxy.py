"""An HTTP proxy on loopback that injects faults between boto3 and the S3 server.

Each request is matched against rules in order; a rule applies to the first ``times``
requests it matches. Actions:

* ``("status", code, s3_code)``: answer with that HTTP status and an S3 error body;
* ``("reset",)``: close the connection without answering;
* ``("delay", seconds)``: wait, then forward;
* ``("truncate", nbytes)``: forward, but send only the first ``nbytes`` of the body
  (with the full Content-Length) and close: a read that breaks mid-stream;
* ``("respond", status, body)``: answer with this body instead of forwarding.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import urlparse


@dataclass
class Rule:
    match: Callable[[str, str], bool]  # (method, path-with-query) -> bool
    action: tuple
    times: int = 1
    hits: int = 0


@dataclass
class FaultProxy:
    upstream: str
    rules: list[Rule] = field(default_factory=list)
    log: list[tuple[str, str]] = field(default_factory=list)

    def start(self) -> str:
        proxy = self
        up = urlparse(self.upstream)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                proxy.log.append((self.command, self.path))
                action = None
                with lock:
                    for rule in proxy.rules:
                        if rule.hits < rule.times and rule.match(self.command, self.path):
                            rule.hits += 1
                            action = rule.action
                            break
                if action and action[0] == "reset":
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.connection.close()
                    self.close_connection = True
                    return
                if action and action[0] == "status":
                    _, code, s3_code = action
                    action = ("respond", code, (f"<?xml version='1.0'?><Error><Code>{s3_code}</Code>"
                                                f"<Message>injected</Message></Error>").encode())
                if action and action[0] == "respond":
                    _, code, payload = action
                    self.send_response(code)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                if action and action[0] == "delay":
                    time.sleep(action[1])
                conn = http.client.HTTPConnection(up.hostname, up.port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host",)}
                headers["Host"] = f"{up.hostname}:{up.port}"
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                head = self.command == "HEAD"
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection") and (head or k.lower() != "content-length"):
                        self.send_header(k, v)
                if not head:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if action and action[0] == "truncate":
                    self.wfile.write(data[: action[1]])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
