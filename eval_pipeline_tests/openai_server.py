"""A local HTTP server on 127.0.0.1 that speaks the OpenAI chat-completions protocol, for tests
that use the real ``openai`` client (the judge, candidate outputs)."""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable


@dataclass
class Reply:
    status: int = 200
    content: str | None = None  # the assistant message of a 200 chat completion
    body: Any = None  # a raw body instead (error responses)
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False  # close the connection without any answer (a dropped connection)


def completion_body(content: str, model: str) -> dict:
    return {"id": "chatcmpl-test", "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": "stop", "logprobs": None}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 40, "total_tokens": 140}}


class ScriptedServer:
    """Replies from a queue (then ``default``), or from ``responder(request_body)`` when set;
    records every request body and the highest number of requests in flight at once."""

    def __init__(self) -> None:
        self.replies: deque[Reply] = deque()
        self.default = Reply(status=500, body={"error": {"message": "script exhausted", "type": "server_error"}})
        self.responder: Callable[[dict], Reply] | None = None
        self.delay = 0.0
        self.requests: list[dict] = []
        self.max_in_flight = 0
        self._in_flight = 0
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> "ScriptedServer":
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def script(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    def _next(self, body: dict) -> Reply:
        with self._lock:
            self.requests.append(body)
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
            if self.responder is not None:
                return self.responder(body)
            return self.replies.popleft() if self.replies else self.default

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if self.path != "/v1/chat/completions":
                    self._send(Reply(status=404, body={"error": {"message": f"no route {self.path}"}}), body)
                    return
                reply = server._next(body)
                try:
                    if server.delay:
                        time.sleep(server.delay)
                finally:
                    # counted out before the reply is written: once the client holds the reply it
                    # may send its next request at once, before this thread is scheduled again
                    with server._lock:
                        server._in_flight -= 1
                self._send(reply, body)

            def _send(self, reply: Reply, request: dict) -> None:
                if reply.drop:
                    self.close_connection = True
                    return
                if reply.content is not None:
                    payload = completion_body(reply.content, request.get("model", "unknown"))
                else:
                    payload = reply.body
                data = json.dumps(payload).encode()
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

        return Handler
