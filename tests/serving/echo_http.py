"""A tiny HTTP server, the own command of a model service in the gateway's tests: it listens
on $HOST:$PORT and lets through only requests that carry `Authorization: Bearer
$SUANLI_SERVICE_TOKEN` (the gateway's secret for it; /health is open to the probe).

    GET|POST|PUT|... /anything?q  → JSON: method, path, query, body, the headers (not the
                                    Authorization); gzip-encoded when the query has gzip=1
    GET /stream?chunks=N&size=S   → N chunks of S bytes, each flushed (a slow reader's test)
    POST /v1/chat/completions     → an OpenAI-shaped stream of `max_tokens` chunks, each with
                                    `chunk_bytes` characters of content (served as protocol openai)
"""

import gzip
import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

TOKEN = os.environ.get("SUANLI_SERVICE_TOKEN", "")
MAX_BODY = 16 * 2**20


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def handle_any(self) -> None:
        url = urlsplit(self.path)
        body = self.rfile.read(min(int(self.headers.get("Content-Length") or 0), MAX_BODY))
        if url.path == "/health":
            self.reply(200, b"ok", "text/plain")
        elif not TOKEN or self.headers.get_all("Authorization") != [f"Bearer {TOKEN}"]:
            self.reply(401, b'{"error": "unauthorized"}')
        elif url.path == "/stream":
            query = parse_qs(url.query)
            self.stream(int(query["chunks"][0]), b"x" * int(query["size"][0]), "text/plain")
        elif url.path == "/v1/chat/completions":
            self.completion(json.loads(body))
        else:
            self.echo(url.path, url.query, body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = handle_any

    def echo(self, path: str, query: str, body: bytes) -> None:
        headers = {k.lower(): v for k, v in self.headers.items() if k.lower() != "authorization"}
        answer = {
            "method": self.command,
            "path": path,
            "query": query,
            "body": body.decode("utf-8", "replace"),
            "headers": headers,
        }
        data = json.dumps(answer).encode()
        if parse_qs(query).get("gzip") == ["1"]:
            self.reply(200, gzip.compress(data), encoding="gzip")
        else:
            self.reply(200, data)

    def completion(self, request: dict) -> None:
        piece = "x" * int(request.get("chunk_bytes", 1))
        event = {"id": "e", "object": "chat.completion.chunk", "model": request.get("model")}
        events = (
            b"data: "
            + json.dumps({**event, "choices": [{"index": 0, "delta": {"content": piece}}]}).encode()
            + b"\n\n"
        )
        self.stream(
            int(request.get("max_tokens", 1)), events, "text/event-stream", b"data: [DONE]\n\n"
        )

    def stream(self, count: int, chunk: bytes, content_type: str, last: bytes = b"") -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for payload in [chunk] * count + ([last] if last else []):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(payload), payload))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")

    def reply(
        self, status: int, body: bytes, kind: str = "application/json", encoding: str = ""
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        if encoding:
            self.send_header("Content-Encoding", encoding)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


if __name__ == "__main__":
    address = (os.environ.get("HOST", "127.0.0.1"), int(os.environ["PORT"]))
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer(address, Handler).serve_forever()
