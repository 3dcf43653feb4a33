"""Notification channels against real receivers on loopback: an HTTP server, an SMTP server."""

import base64
import hashlib
import hmac
import json
import shutil
import socket
import socketserver
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from email import message_from_bytes, policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from suanli.monitoring.alerts import Alert, FieldError, Rule
from suanli.monitoring.channels import (
    MAX_ATTEMPTS,
    MAX_DELAY,
    Channel,
    DeliveryError,
    Notice,
    deliver,
    notice,
    payload,
    request,
    retry_delay,
    should_retry,
    validate_channel,
)
from suanli.monitoring.model import labels_of

NOW = 1_767_323_045.25  # 2026-01-02T03:04:05.25Z
HOT = Rule(1, "GPU temperature high", "gpu_temperature_celsius", {}, ">", 85, 300, "critical")
LABELS = labels_of({"node": "vm", "gpu": 0, "uuid": "GPU-1a2b", "simulated": 0})
FIRING = Alert(1, LABELS, "firing", since=NOW - 300, fired_at=NOW, value=91.0)


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("all_proxy", raising=False)


def sample_notice(language: str = "en", **changes: object) -> Notice:
    made = notice(HOT, FIRING, language=language, link="https://suanli.example/alerts")
    return replace(made, **changes)


# --- a real HTTP receiver -------------------------------------------------------------------


@dataclass
class Received:
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)


@dataclass
class Receiver:
    url: str
    requests: list[Received] = field(default_factory=list)
    status: int = 200
    answer: bytes = b'{"errcode": 0, "errmsg": "ok"}'


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            parts = urlsplit(self.path)
            state.requests.append(
                Received(
                    parts.path,
                    parse_qs(parts.query),
                    {k.lower(): v for k, v in self.headers.items()},
                    self.rfile.read(length),
                )
            )
            self.send_response(state.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(state.answer)))
            self.end_headers()
            self.wfile.write(state.answer)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def channel(kind: str, url: str, **changes: object) -> Channel:
    return validate_channel(Channel(1, f"ops-{kind}", kind, url, **changes))  # type: ignore[arg-type]


# --- payloads -------------------------------------------------------------------------------


def test_webhook_payload_is_stable_and_alertmanager_shaped(receiver: Receiver) -> None:
    hook = channel("webhook", f"{receiver.url}/hook")
    deliver(hook, sample_notice(), now=NOW)
    (got,) = receiver.requests
    assert got.path == "/hook"
    assert got.headers["content-type"].startswith("application/json")
    assert "x-suanli-signature" not in got.headers
    body = got.json()
    labels = {"gpu": "0", "node": "vm", "simulated": "0", "uuid": "GPU-1a2b"}
    summary_text = (
        "FIRING critical: GPU temperature high — node vm, GPU 0 (GPU-1a2b): 91 °C "
        "(threshold > 85 °C)"
    )
    assert {key: body[key] for key in list(body)[:12]} == {
        "version": "1",
        "source": "suanli",
        "status": "firing",
        "rule": "GPU temperature high",
        "severity": "critical",
        "labels": labels,
        "value": 91.0,
        "threshold": 85.0,
        "startsAt": "2026-01-02T02:59:05.250000Z",
        "endsAt": None,
        "summary": summary_text,
        "link": "https://suanli.example/alerts",
    }
    (alert,) = body["alerts"]
    assert alert["status"] == "firing"
    assert alert["labels"] == {
        "alertname": "GPU temperature high",
        "severity": "critical",
        **labels,
    }
    assert alert["annotations"]["summary"] == summary_text
    assert alert["startsAt"] == body["startsAt"]
    assert alert["endsAt"] == "0001-01-01T00:00:00Z"
    assert alert["generatorURL"] == "https://suanli.example/alerts"
    assert len(alert["fingerprint"]) == 16
    assert body["receiver"] == "ops-webhook" and body["commonLabels"] == alert["labels"]

    resolved = sample_notice(state="resolved", resolved_at=datetime(2026, 1, 2, 4, tzinfo=UTC))
    again = payload(hook, resolved, now=NOW)
    assert again["status"] == "resolved" and again["endsAt"] == "2026-01-02T04:00:00Z"
    assert again["alerts"][0]["endsAt"] == "2026-01-02T04:00:00Z"
    assert again["alerts"][0]["fingerprint"] == alert["fingerprint"]  # the same series


def test_webhook_with_a_secret_is_signed(receiver: Receiver) -> None:
    hook = channel("webhook", f"{receiver.url}/hook", secret="s3cret")
    deliver(hook, sample_notice(), now=NOW)
    (got,) = receiver.requests
    assert got.headers["x-suanli-timestamp"] == str(int(NOW))
    expected = hmac.new(b"s3cret", f"{int(NOW)}.".encode() + got.body, hashlib.sha256)
    assert got.headers["x-suanli-signature"] == f"sha256={expected.hexdigest()}"


def test_json_never_carries_nan() -> None:
    hook = channel("webhook", "https://example.org/hook")
    body = payload(hook, sample_notice(value=float("nan")), now=NOW)
    assert body["value"] is None
    json.dumps(body, allow_nan=False)


def test_wecom_markdown(receiver: Receiver) -> None:
    robot = channel("wecom", f"{receiver.url}/cgi-bin/webhook/send?key=abc", language="zh-CN")
    deliver(robot, sample_notice("zh-CN"), now=NOW)
    (got,) = receiver.requests
    assert got.query == {"key": ["abc"]}
    body = got.json()
    assert list(body) == ["msgtype", "markdown"] and body["msgtype"] == "markdown"
    content = body["markdown"]["content"]
    assert "【告警中·严重】GPU 温度过高 — 节点 vm，GPU 0（GPU-1a2b）" in content
    assert '当前值：<font color="comment">91 °C</font>' in content and "> 85 °C" in content
    assert "[在控制台查看](https://suanli.example/alerts)" in content
    assert len(content.encode()) <= 4096


def test_long_robot_messages_are_clipped() -> None:
    robot = channel("wecom", "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=abc")
    huge = sample_notice(summary="x" * 10_000)
    assert len(payload(robot, huge, now=NOW)["markdown"]["content"].encode()) <= 4096


def test_dingtalk_markdown_and_signature(receiver: Receiver) -> None:
    secret = "SEC0123456789abcdef"
    robot = channel("dingtalk", f"{receiver.url}/robot/send?access_token=tok", secret=secret)
    deliver(robot, sample_notice(), now=NOW)
    (got,) = receiver.requests
    timestamp = str(int(NOW * 1000))
    assert got.query["access_token"] == ["tok"]
    assert got.query["timestamp"] == [timestamp]
    string_to_sign = f"{timestamp}\n{secret}".encode()
    digest = hmac.new(secret.encode(), string_to_sign, hashlib.sha256).digest()
    assert got.query["sign"] == [base64.b64encode(digest).decode()]

    url, _, _ = request(robot, sample_notice(), now=NOW)
    raw_sign = parse_qs(urlsplit(url).query, keep_blank_values=True)["sign"][0]
    assert raw_sign == base64.b64encode(digest).decode()
    assert not any(c in urlsplit(url).query.split("sign=")[1] for c in "+/=")  # URL-encoded

    body = got.json()
    assert body["msgtype"] == "markdown"
    assert (
        body["markdown"]["title"]
        == "[FIRING critical] GPU temperature high — node vm, GPU 0 (GPU-1a2b)"
    )
    assert (
        "91 °C" in body["markdown"]["text"] and "**Threshold**: > 85 °C" in body["markdown"]["text"]
    )

    unsigned = channel("dingtalk", f"{receiver.url}/robot/send?access_token=tok")
    url, _, _ = request(unsigned, sample_notice(), now=NOW)
    assert urlsplit(url).query == "access_token=tok"


def test_feishu_text_and_signature(receiver: Receiver) -> None:
    receiver.answer = b'{"code": 0, "msg": "success", "data": {}}'
    secret = "feishu-secret"
    bot = channel("feishu", f"{receiver.url}/open-apis/bot/v2/hook/xyz", secret=secret)
    deliver(bot, sample_notice(), now=NOW)
    body = receiver.requests[0].json()
    assert body["msg_type"] == "text"
    assert body["timestamp"] == str(int(NOW))
    key = f"{int(NOW)}\n{secret}".encode()
    assert body["sign"] == base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()
    assert body["content"]["text"].startswith("FIRING critical: GPU temperature high")
    assert "Threshold: > 85 °C" in body["content"]["text"]

    unsigned = channel("feishu", f"{receiver.url}/open-apis/bot/v2/hook/xyz")
    assert set(payload(unsigned, sample_notice(), now=NOW)) == {"msg_type", "content"}


def test_event_notice_has_no_threshold() -> None:
    failed = Rule(3, "Job failed", "job.failed", {}, ">", 0, 0, "warning", kind="event")
    alert = Alert(3, labels_of({"job": 42, "project": "vision"}), "firing", NOW, NOW)
    made = notice(failed, alert, language="zh-CN")
    assert made.threshold is None and made.rule == "Job failed" and made.value is None
    assert made.title == "【告警中·警告】作业失败 — 作业 42，项目 vision"
    bot = channel("feishu", "https://open.feishu.cn/open-apis/bot/v2/hook/xyz")
    text = payload(bot, made, now=NOW)["content"]["text"]
    assert "阈值" not in text and "作业 42" in text


# --- failures -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "answer", "reason", "retryable"),
    [
        ("dingtalk", b'{"errcode": 310000, "errmsg": "sign not match"}', "310000", False),
        ("dingtalk", b'{"errcode": 130101, "errmsg": "send too fast"}', "130101", True),
        ("wecom", b'{"errcode": 93000, "errmsg": "invalid webhook url"}', "93000", False),
        ("feishu", b'{"code": 19021, "msg": "sign match fail"}', "19021", False),
        ("feishu", b'{"StatusCode": 9499, "StatusMessage": "too many"}', "9499", True),
        ("wecom", b"<html>hello</html>", "not a JSON answer", False),
    ],
)
def test_robot_error_bodies_raise(
    receiver: Receiver, kind: str, answer: bytes, reason: str, retryable: bool
) -> None:
    receiver.answer = answer
    with pytest.raises(DeliveryError, match=reason) as error:
        deliver(channel(kind, f"{receiver.url}/robot?access_token=t"), sample_notice(), now=NOW)
    assert error.value.retryable is retryable
    assert "access_token" not in error.value.reason


def test_robot_success_bodies_pass(receiver: Receiver) -> None:
    for kind, answer in [
        ("wecom", b'{"errcode": 0, "errmsg": "ok"}'),
        ("feishu", b'{"StatusCode": 0, "StatusMessage": "success"}'),
    ]:
        receiver.answer = answer
        deliver(channel(kind, f"{receiver.url}/robot"), sample_notice(), now=NOW)
    assert len(receiver.requests) == 2


@pytest.mark.parametrize(("status", "retryable"), [(500, True), (503, True), (404, False)])
def test_http_errors_raise(receiver: Receiver, status: int, retryable: bool) -> None:
    receiver.status, receiver.answer = status, b"broken"
    with pytest.raises(DeliveryError, match=f"HTTP {status}: broken") as error:
        deliver(channel("webhook", f"{receiver.url}/hook"), sample_notice(), now=NOW)
    assert error.value.retryable is retryable
    assert len(receiver.requests) == 1


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_closed_port_raises() -> None:
    hook = channel("webhook", f"http://127.0.0.1:{free_port()}/hook")
    with pytest.raises(DeliveryError, match="ConnectError") as error:
        deliver(hook, sample_notice(), now=NOW, timeout=5)
    assert error.value.retryable


def test_silent_server_times_out() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)  # the kernel accepts; nobody answers
        hook = channel("webhook", f"http://127.0.0.1:{silent.getsockname()[1]}/hook")
        with pytest.raises(DeliveryError, match=r"no answer within 0\.3 s"):
            deliver(hook, sample_notice(), now=NOW, timeout=0.3)


def test_retry_delay_grows_and_is_capped() -> None:
    delays = [retry_delay(n) for n in range(1, MAX_ATTEMPTS + 3)]
    assert delays[:4] == [5, 10, 20, 40]
    assert delays == sorted(delays)
    assert max(delays) == MAX_DELAY == 600 and retry_delay(10_000) == 600
    assert retry_delay(0) == 5
    assert sum(retry_delay(n) for n in range(1, MAX_ATTEMPTS)) == 1835  # given up after ~31 min
    transient = DeliveryError("HTTP 503")
    assert should_retry(transient, 1) and not should_retry(transient, MAX_ATTEMPTS)
    assert not should_retry(DeliveryError("bad token", retryable=False), 1)


# --- validation -----------------------------------------------------------------------------


MAIL = {"email_from": "a@b.c", "email_to": ("d@e.f",)}


@pytest.mark.parametrize(
    ("kind", "url", "changes", "field_name"),
    [
        ("webhook", "https://example.org/hook", {"name": " "}, "name"),
        ("pager", "https://example.org/hook", {}, "kind"),
        ("webhook", "ftp://example.org/hook", {}, "url"),
        ("dingtalk", "oapi.dingtalk.com/robot/send", {}, "url"),
        ("wecom", "https:///nohost", {}, "url"),
        ("webhook", "https://example.org:99999/", {}, "url"),
        ("webhook", "https://example.org/a b", {}, "url"),
        ("email", "https://mail.example.org", MAIL, "url"),
        ("email", "smtp://u:p@mail.example.org", MAIL, "url"),
        ("email", "smtp://mail.example.org", {"email_from": "a@b.c"}, "email_to"),
        ("email", "smtp://mail.example.org", {**MAIL, "email_to": ("nobody",)}, "email_to"),
        ("email", "smtp://mail.example.org", {**MAIL, "email_to": ("x@y.z\r\nBcc: q@r.s",)},
         "email_to"),
        ("email", "smtp://mail.example.org", {"email_to": ("d@e.f",)}, "email_from"),
        ("webhook", "https://example.org/hook", {"language": "fr"}, "language"),
    ],
)  # fmt: skip
def test_invalid_channels_name_the_field(
    kind: str, url: str, changes: dict, field_name: str
) -> None:
    fields = {"id": 1, "name": "ops", "kind": kind, "url": url, **changes}
    with pytest.raises(ValueError, match=f"^{field_name}: ") as error:
        validate_channel(Channel(**fields))
    assert isinstance(error.value, FieldError) and error.value.field == field_name


def test_valid_channels() -> None:
    mail = validate_channel(
        Channel(1, "ops", "email", " smtps://mail.example.org:465 ", email_from="Suanli <s@x.cn>",
                email_to=["a@x.cn", "b@x.cn"], password="pw")  # type: ignore[arg-type]
    )  # fmt: skip
    assert mail.url == "smtps://mail.example.org:465" and mail.email_to == ("a@x.cn", "b@x.cn")
    assert "pw" not in repr(mail)
    for kind in ("webhook", "wecom", "dingtalk", "feishu"):
        validate_channel(Channel(1, "ops", kind, "http://10.0.0.1:8080/x", language="zh-CN"))  # type: ignore[arg-type]


# --- e-mail, to a real SMTP server on loopback ----------------------------------------------


@dataclass
class Mail:
    sender: str
    recipients: list[str]
    data: bytes
    tls: bool
    login: str


class SMTPHandler(socketserver.StreamRequestHandler):
    """Enough of RFC 5321 for smtplib: EHLO, STARTTLS, AUTH PLAIN/LOGIN, MAIL, RCPT, DATA."""

    server: "SMTPServer"

    def setup(self) -> None:
        if self.server.implicit_tls:
            self.request = self.server.tls.wrap_socket(self.request, server_side=True)
        super().setup()

    def reply(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")
        self.wfile.flush()

    def read(self) -> str:
        return self.rfile.readline().decode().rstrip("\r\n")

    def handle(self) -> None:
        tls, login, sender, recipients = self.server.implicit_tls, "", "", []
        self.reply("220 test ESMTP")
        while line := self.read():
            verb, _, argument = line.partition(" ")
            verb = verb.upper()
            if verb in ("EHLO", "HELO"):
                features = ["250-test", "250-8BITMIME"]
                if self.server.starttls and not tls:
                    features.append("250-STARTTLS")
                if self.server.auth and tls:
                    features.append("250-AUTH PLAIN LOGIN")
                self.reply("\r\n".join([*features, "250 SMTPUTF8"]))
            elif verb == "STARTTLS":
                self.reply("220 go ahead")
                self.request = self.server.tls.wrap_socket(self.request, server_side=True)
                self.rfile = self.request.makefile("rb")
                self.wfile = self.request.makefile("wb")
                tls = True
            elif verb == "AUTH":
                mechanism, _, initial = argument.partition(" ")
                if mechanism.upper() == "PLAIN":
                    _, user, password = base64.b64decode(initial).decode().split("\0")
                else:
                    self.reply("334 VXNlcm5hbWU6")
                    user = base64.b64decode(self.read()).decode()
                    self.reply("334 UGFzc3dvcmQ6")
                    password = base64.b64decode(self.read()).decode()
                if (user, password) == self.server.auth:
                    login = user
                    self.reply("235 ok")
                else:
                    self.reply("535 bad credentials")
            elif verb == "MAIL":
                sender = argument.split(":", 1)[1].split()[0].strip("<>")
                self.reply("250 ok")
            elif verb == "RCPT":
                recipient = argument.split(":", 1)[1].strip().strip("<>")
                if recipient.startswith("nobody@"):
                    self.reply("550 no such user")
                else:
                    recipients.append(recipient)
                    self.reply("250 ok")
            elif verb == "DATA":
                self.reply("354 end with .")
                lines = []
                while (raw := self.rfile.readline()) not in (b".\r\n", b""):
                    lines.append(raw[1:] if raw.startswith(b"..") else raw)
                self.server.mails.append(Mail(sender, recipients, b"".join(lines), tls, login))
                self.reply("250 queued")
            elif verb == "QUIT":
                self.reply("221 bye")
                return
            else:
                self.reply("250 ok")


class SMTPServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        *,
        tls: ssl.SSLContext | None = None,
        implicit_tls: bool = False,
        starttls: bool = False,
        auth: tuple[str, str] | None = None,
    ) -> None:
        super().__init__(("127.0.0.1", 0), SMTPHandler)
        self.tls, self.implicit_tls, self.starttls, self.auth = tls, implicit_tls, starttls, auth
        self.mails: list[Mail] = []
        self.thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return self.server_address[1]

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: no certificate for the TLS tests")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def contexts(certificate: tuple[Path, Path]) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(*certificate)
    return server, ssl.create_default_context(cafile=str(certificate[0]))


def mail_channel(port: int, scheme: str = "smtp", **changes: object) -> Channel:
    return validate_channel(
        Channel(2, "ops-mail", "email", f"{scheme}://127.0.0.1:{port}",
                email_from="suanli@example.org", email_to=("ops@example.org", "me@example.org"),
                **changes)  # type: ignore[arg-type]
    )  # fmt: skip


def test_email_in_plain_smtp() -> None:
    server = SMTPServer()
    try:
        deliver(mail_channel(server.port), sample_notice(), now=NOW, timeout=5)
    finally:
        server.stop()
    (mail,) = server.mails
    assert mail.sender == "suanli@example.org"
    assert mail.recipients == ["ops@example.org", "me@example.org"]
    assert not mail.tls and not mail.login
    message = message_from_bytes(mail.data, policy=policy.default)
    assert (
        message["Subject"] == "[FIRING critical] GPU temperature high — node vm, GPU 0 (GPU-1a2b)"
    )
    assert message["To"] == "ops@example.org, me@example.org"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["Date"].datetime.timestamp() == int(NOW)
    body = message.get_content()
    assert body.startswith("FIRING critical: GPU temperature high — node vm, GPU 0 (GPU-1a2b)")
    assert "Value: 91 °C" in body and "Threshold: > 85 °C" in body
    assert "https://suanli.example/alerts" in body


def test_email_in_chinese() -> None:
    server = SMTPServer()
    try:
        mail = mail_channel(server.port, language="zh-CN")
        resolved = replace(FIRING, state="resolved", resolved_at=NOW + 60, value=70)
        deliver(mail, notice(HOT, resolved, language="zh-CN"), now=NOW, timeout=5)
    finally:
        server.stop()
    message = message_from_bytes(server.mails[0].data, policy=policy.default)
    assert message["Subject"].startswith("【已恢复·严重】GPU 温度过高")
    assert "恢复时间" in message.get_content()


def test_email_with_starttls_and_login(certificate: tuple[Path, Path]) -> None:
    server_tls, client_tls = contexts(certificate)
    server = SMTPServer(tls=server_tls, starttls=True, auth=("alerts", "pw"))
    try:
        mail = mail_channel(server.port, username="alerts", password="pw")
        deliver(mail, sample_notice(), now=NOW, timeout=5, ssl_context=client_tls)
        with pytest.raises(DeliveryError, match="login refused: 535") as error:
            deliver(replace(mail, password="wrong"), sample_notice(), now=NOW, timeout=5,
                    ssl_context=client_tls)  # fmt: skip
        assert not error.value.retryable
        with pytest.raises(DeliveryError, match="CERTIFICATE_VERIFY_FAILED"):
            deliver(mail, sample_notice(), now=NOW, timeout=5)  # the system does not trust it
    finally:
        server.stop()
    (sent,) = server.mails
    assert sent.tls and sent.login == "alerts"


def test_email_over_smtps(certificate: tuple[Path, Path]) -> None:
    server_tls, client_tls = contexts(certificate)
    server = SMTPServer(tls=server_tls, implicit_tls=True, auth=("alerts", "pw"))
    try:
        mail = mail_channel(server.port, "smtps", username="alerts", password="pw")
        deliver(mail, sample_notice(), now=NOW, timeout=5, ssl_context=client_tls)
    finally:
        server.stop()
    (sent,) = server.mails
    assert sent.tls and sent.login == "alerts"


def test_email_password_is_never_sent_in_clear() -> None:
    server = SMTPServer(auth=("alerts", "pw"))
    try:
        mail = mail_channel(server.port, username="alerts", password="pw")
        with pytest.raises(DeliveryError, match="no STARTTLS") as error:
            deliver(mail, sample_notice(), now=NOW, timeout=5)
    finally:
        server.stop()
    assert not error.value.retryable and server.mails == []


def test_email_refused_recipient_and_closed_port() -> None:
    server = SMTPServer()
    try:
        mail = replace(mail_channel(server.port), email_to=("nobody@example.org",))
        with pytest.raises(
            DeliveryError, match=r"recipients refused: nobody@example\.org"
        ) as error:
            deliver(mail, sample_notice(), now=NOW, timeout=5)
        assert not error.value.retryable
        partly = replace(mail, email_to=("nobody@example.org", "ops@example.org"))
        with pytest.raises(DeliveryError, match=r"recipients refused: nobody@example\.org"):
            deliver(partly, sample_notice(), now=NOW, timeout=5)
    finally:
        server.stop()
    assert [m.recipients for m in server.mails] == [["ops@example.org"]]

    with pytest.raises(DeliveryError, match="ConnectionRefusedError") as error:
        deliver(mail_channel(free_port()), sample_notice(), now=NOW, timeout=5)
    assert error.value.retryable
