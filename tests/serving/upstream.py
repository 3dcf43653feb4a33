"""A small, fast, OpenAI-shaped test server: the engine of a model service in tests that need a
case a real vLLM will not produce on demand (a stream cut short, an engine that dies mid-stream
or at start, a usage block missing), and a fast upstream in benchmarks that measure what a
gateway adds. It is a plain ASGI app on uvicorn, keeps nothing per request in memory (only two
counters), and answers deterministically: `max_tokens` words "tok0 tok1 ...", one word = one
token.

    python3 tests/serving/upstream.py --port PORT [--host 127.0.0.1] [--model NAME]
        [--tokens N] [--delay-ms D] [--no-stream-usage] [--no-usage] [--die-after-chunks K]
        [--fail-start] [--token-env NAME] [--log FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import os
import struct
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import uvicorn

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# A request body larger than this is refused: a test server need not hold more.
MAX_BODY = 16 * 1024 * 1024
# The most tokens one request may ask for, so that a typo cannot build a gigabyte of text.
MAX_TOKENS = 1_000_000
EMBEDDING_SIZE = 8


class RequestError(Exception):
    """A client error answered in OpenAI's error shape."""

    def __init__(
        self, status: int, message: str, param: str | None = None, code: str | None = None
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code


@dataclass(frozen=True)
class Settings:
    """What the command line chose; fixed for the life of the process."""

    model: str = "tiny"
    tokens: int = 16
    delay: float = 0.0
    stream_usage: bool = True
    usage: bool = True
    die_after_chunks: int | None = None
    # The Authorization header every /v1 route requires, or None when open.
    authorization: bytes | None = None
    log: str | None = None


def dumps(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def word_count(text: object) -> int:
    return len(text.split()) if isinstance(text, str) else 0


def content_words(content: object) -> int:
    """Words of a chat message's content: a string, or a list of parts whose text counts."""
    if isinstance(content, list):
        return sum(word_count(part.get("text")) for part in content if isinstance(part, dict))
    return word_count(content)


def prompt_words(prompt: object) -> int:
    """Tokens of a completion prompt or an embedding input: words of a string, the length of a
    token array, or the sum over a list of either."""
    if isinstance(prompt, str):
        return word_count(prompt)
    if isinstance(prompt, list):
        if all(isinstance(item, int) for item in prompt):
            return len(prompt)
        return sum(prompt_words(item) for item in prompt)
    return 0


def usage_block(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def token_text(index: int) -> str:
    """Token `index` as streamed: the words join with a space, so the chunks add up to the
    non-streamed text."""
    return f"tok{index}" if index == 0 else f" tok{index}"


def requested_tokens(body: dict[str, Any], settings: Settings) -> tuple[int, str]:
    """How many tokens to generate and the finish reason: "length" when the request set the
    limit (generation stops at it), "stop" for the server's own default length."""
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_TOKENS:
            raise RequestError(400, f"{name} must be an integer from 1 to {MAX_TOKENS}", name)
        return value, "length"
    return settings.tokens, "stop"


def embedding(text: object) -> list[float]:
    """A deterministic vector for one input, the same in every process (not Python's hash)."""
    digest = hashlib.sha256(json.dumps(text).encode()).digest()
    return [round(byte / 127.5 - 1.0, 6) for byte in digest[:EMBEDDING_SIZE]]


class Upstream:
    """The ASGI application."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.served = 0
        self.cancelled = 0
        self.log_file = open(settings.log, "a", encoding="utf-8") if settings.log else None  # noqa: SIM115
        self.routes: dict[str, Callable[[dict[str, Any], Receive, Send], Awaitable[bool]]]
        self.routes = {
            "/v1/chat/completions": self.chat,
            "/v1/completions": self.completions,
            "/v1/embeddings": self.embeddings,
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        stream, cancelled, status = False, False, 200
        try:
            if path == "/health":
                await respond(send, 200, b"ok", b"text/plain")
            elif path == "/metrics":
                await respond(send, 200, self.metrics(), b"text/plain; version=0.0.4")
            elif path.startswith("/v1/"):
                self.served += 1
                self.authorize(scope)
                stream, cancelled = await self.v1(path, scope, receive, send)
            else:
                raise RequestError(404, f"no route {path}", code="not_found")
        except RequestError as error:
            status = error.status
            await respond(send, status, error_body(error))
        if cancelled:
            self.cancelled += 1
        self.record(path, stream, cancelled, status)

    async def v1(self, path: str, scope: Scope, receive: Receive, send: Send) -> tuple[bool, bool]:
        """Answers a /v1 route: (whether it streamed, whether the client left early)."""
        if path == "/v1/models":
            if scope["method"] != "GET":
                raise RequestError(405, "method not allowed")
            await respond(send, 200, dumps(self.model_list()))
            return False, False
        handler = self.routes.get(path)
        if handler is None:
            raise RequestError(404, f"no route {path}", code="not_found")
        if scope["method"] != "POST":
            raise RequestError(405, "method not allowed")
        body = await read_json(receive)
        stream = body.get("stream") is True
        return stream, await handler(body, receive, send)

    def authorize(self, scope: Scope) -> None:
        expected = self.settings.authorization
        if expected is None:
            return
        given = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        if not hmac.compare_digest(given, expected):
            raise RequestError(401, "invalid or missing API key", code="invalid_api_key")

    def model_list(self) -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {
                    "id": self.settings.model,
                    "object": "model",
                    "created": 0,
                    "owned_by": "suanli-test",
                    "root": self.settings.model,
                    "max_model_len": MAX_TOKENS,
                }
            ],
        }

    def metrics(self) -> bytes:
        return (
            "# HELP upstream_requests_total Requests to /v1 routes served.\n"
            "# TYPE upstream_requests_total counter\n"
            f"upstream_requests_total {self.served}\n"
            "# HELP upstream_requests_cancelled_total Streams whose client left early.\n"
            "# TYPE upstream_requests_cancelled_total counter\n"
            f"upstream_requests_cancelled_total {self.cancelled}\n"
        ).encode()

    def record(self, path: str, stream: bool, cancelled: bool, status: int) -> None:
        """One JSON line per request in the --log file; nothing is kept in memory."""
        if self.log_file is None:
            return
        line = {"path": path, "stream": stream, "cancelled": cancelled, "status": status}
        self.log_file.write(json.dumps(line) + "\n")
        self.log_file.flush()

    def envelope(self, kind: str) -> dict[str, Any]:
        prefix = "chatcmpl" if kind.startswith("chat") else "cmpl"
        return {
            "id": f"{prefix}-{self.served}",
            "object": kind,
            "created": int(time.time()),
            "model": self.settings.model,
        }

    async def chat(self, body: dict[str, Any], receive: Receive, send: Send) -> bool:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise RequestError(400, "messages must be a non-empty list", "messages")
        prompt_tokens = sum(
            content_words(message.get("content"))
            for message in messages
            if isinstance(message, dict)
        )
        count, finish = requested_tokens(body, self.settings)
        if body.get("stream") is True:
            return await self.stream(
                body, "chat.completion.chunk", prompt_tokens, count, finish, receive, send
            )
        reply = self.envelope("chat.completion")
        text = "".join(token_text(i) for i in range(count))
        reply["choices"] = [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": finish,
            }
        ]
        await respond(send, 200, dumps(self.with_usage(reply, prompt_tokens, count)))
        return False

    async def completions(self, body: dict[str, Any], receive: Receive, send: Send) -> bool:
        prompt = body.get("prompt")
        if not isinstance(prompt, str | list) or not prompt:
            raise RequestError(400, "prompt must be a non-empty string or list", "prompt")
        count, finish = requested_tokens(body, self.settings)
        if body.get("stream") is True:
            return await self.stream(
                body, "text_completion", prompt_words(prompt), count, finish, receive, send
            )
        reply = self.envelope("text_completion")
        text = "".join(token_text(i) for i in range(count))
        reply["choices"] = [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}]
        await respond(send, 200, dumps(self.with_usage(reply, prompt_words(prompt), count)))
        return False

    async def embeddings(self, body: dict[str, Any], receive: Receive, send: Send) -> bool:
        given = body.get("input")
        if not isinstance(given, str | list) or not given:
            raise RequestError(400, "input must be a non-empty string or list", "input")
        encoding = body.get("encoding_format") or "float"
        if encoding not in ("float", "base64"):
            raise RequestError(400, "encoding_format must be float or base64", "encoding_format")
        inputs = (
            [given] if isinstance(given, str) or all(isinstance(i, int) for i in given) else given
        )
        data = []
        for index, item in enumerate(inputs):
            vector: list[float] | str = embedding(item)
            if encoding == "base64":
                vector = base64.b64encode(struct.pack(f"<{EMBEDDING_SIZE}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": vector})
        reply: dict[str, Any] = {"object": "list", "data": data, "model": self.settings.model}
        if self.settings.usage:
            tokens = prompt_words(given)
            reply["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
        await respond(send, 200, dumps(reply))
        return False

    def with_usage(self, reply: dict[str, Any], prompt_tokens: int, count: int) -> dict[str, Any]:
        if self.settings.usage:
            reply["usage"] = usage_block(prompt_tokens, count)
        return reply

    async def stream(
        self,
        body: dict[str, Any],
        kind: str,
        prompt_tokens: int,
        count: int,
        finish: str,
        receive: Receive,
        send: Send,
    ) -> bool:
        """Sends the SSE stream, one token per chunk, each flushed as it is sent; returns
        whether the client left before the end. uvicorn's send is silent once the client has
        gone, so a watcher on receive() (which answers http.disconnect then) tells."""
        options = body.get("stream_options")
        want_usage = (
            isinstance(options, dict) and options.get("include_usage") is True
        ) and self.settings.stream_usage
        head = b"data: " + dumps(self.envelope(kind))[:-1] + b',"choices":['
        chat = kind.startswith("chat")
        gone = asyncio.Event()
        watcher = asyncio.create_task(watch_disconnect(receive, gone))
        sent = 0

        async def emit(payload: bytes) -> bool:
            """Sends one chunk; False once the client has gone."""
            nonlocal sent
            if gone.is_set():
                return False
            await send({"type": "http.response.body", "body": payload, "more_body": True})
            sent += 1
            if sent == self.settings.die_after_chunks:
                os._exit(1)
            return True

        def choice(text: str | None, reason: str | None, role: bool = False) -> bytes:
            if chat:
                delta: dict[str, str] = {"role": "assistant"} if role else {}
                if text is not None:
                    delta["content"] = text
                item: dict[str, Any] = {"index": 0, "delta": delta}
            else:
                item = {"index": 0, "text": text or ""}
            item["logprobs"] = None
            item["finish_reason"] = reason
            return head + dumps(item) + b"]}\n\n"

        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"text/event-stream"),
                        (b"cache-control", b"no-cache"),
                    ],
                }
            )
            if chat and not await emit(choice("", None, role=True)):
                return True
            for index in range(count):
                await asyncio.sleep(self.settings.delay)
                if not await emit(choice(token_text(index), None)):
                    return True
            if not await emit(choice(None if chat else "", finish)):
                return True
            if want_usage:
                usage = dumps(usage_block(prompt_tokens, count))
                if not await emit(head + b'],"usage":' + usage + b"}\n\n"):
                    return True
            if not await emit(b"data: [DONE]\n\n"):
                return True
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return gone.is_set()
        finally:
            watcher.cancel()


async def watch_disconnect(receive: Receive, gone: asyncio.Event) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    gone.set()


async def read_json(receive: Receive) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 (413 when too large)."""
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise RequestError(400, "client disconnected")
        body += message.get("body", b"")
        if len(body) > MAX_BODY:
            raise RequestError(413, "request body too large")
        if not message.get("more_body"):
            break
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise RequestError(400, f"invalid JSON: {error}") from None
    if not isinstance(value, dict):
        raise RequestError(400, "the body must be a JSON object")
    return value


def error_body(error: RequestError) -> bytes:
    return dumps(
        {
            "error": {
                "message": error.message,
                "type": "invalid_request_error",
                "param": error.param,
                "code": error.code,
            }
        }
    )


async def respond(
    send: Send, status: int, body: bytes, content_type: bytes = b"application/json"
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--tokens", type=int, default=16, help="tokens when max_tokens is unset")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="pause before each token")
    parser.add_argument("--no-stream-usage", action="store_true")
    parser.add_argument("--no-usage", action="store_true")
    parser.add_argument("--die-after-chunks", type=int, default=None, metavar="K")
    parser.add_argument("--fail-start", action="store_true")
    parser.add_argument("--token-env", default=None, metavar="NAME")
    parser.add_argument("--log", default=None, metavar="FILE")
    parser.add_argument("--uds", default=None, metavar="PATH", help="listen on a Unix socket")
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace) -> Settings:
    token = os.environ.get(args.token_env, "") if args.token_env else ""
    return Settings(
        model=args.model,
        tokens=args.tokens,
        delay=args.delay_ms / 1000,
        stream_usage=not args.no_stream_usage,
        usage=not args.no_usage,
        die_after_chunks=args.die_after_chunks,
        authorization=f"Bearer {token}".encode() if token else None,
        log=args.log,
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.fail_start:
        print(f"fatal: cannot load model {args.model}", file=sys.stderr, flush=True)
        sys.exit(3)
    uvicorn.run(
        Upstream(settings_from(args)),
        host=args.host,
        port=args.port,
        uds=args.uds,
        http=http_implementation(),
        lifespan="off",
        access_log=False,
        log_level="warning",
    )


def http_implementation() -> str:
    """httptools, the faster parser, where it is installed; h11 (uvicorn's own) otherwise."""
    try:
        import httptools  # noqa: F401
    except ImportError:
        return "h11"
    return "httptools"


if __name__ == "__main__":
    main()
