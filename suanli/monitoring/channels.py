"""Notification channels: where alert changes go, and how each kind is spoken to.

Kinds: a generic `webhook` (a documented JSON, shaped like Alertmanager's webhook so that tools
made for it read it), the group robots of WeCom (企业微信), DingTalk (钉钉) and Feishu/Lark
(飞书), and `email` over SMTP. No database, no clock, no global state: the caller passes the
time (`now`, seconds since the epoch) so signatures are reproducible, and keeps the retries
(`retry_delay`, `MAX_ATTEMPTS`).

`deliver` blocks (httpx, smtplib) for up to about `timeout` seconds per network step; run it in
a worker thread, never on the event loop.

Generic webhook body (`PAYLOAD_VERSION` "1"), `Content-Type: application/json`:

    {"version": "1", "source": "suanli",
     "status": "firing" | "resolved",
     "rule": "GPU temperature high", "severity": "critical",
     "labels": {"node": "vm", "gpu": "0", ...},          # the series' labels
     "value": 91.0, "threshold": 85.0,                     # numbers or null
     "startsAt": "2026-01-02T03:04:05Z", "endsAt": null,   # ISO 8601, UTC; endsAt once resolved
     "summary": "FIRING critical: ...", "link": "https://.../alerts",
     # Alertmanager's webhook fields (one alert per message):
     "receiver": <channel name>, "groupKey": ..., "truncatedAlerts": 0,
     "groupLabels": {"alertname": ...}, "commonLabels": {...}, "commonAnnotations": {...},
     "externalURL": <link>,
     "alerts": [{"status", "labels": {"alertname", "severity", ...series labels},
                 "annotations": {"summary", "value", "threshold"},
                 "startsAt", "endsAt" ("0001-01-01T00:00:00Z" while firing, as Alertmanager),
                 "generatorURL": <link>, "fingerprint"}]}

With a secret, a webhook request also carries `X-Suanli-Timestamp: <now, whole seconds>` and
`X-Suanli-Signature: sha256=<hex HMAC-SHA256 keyed with the secret over
"<timestamp>." + body>`; a receiver recomputes it and may refuse old timestamps.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import smtplib
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from typing import Any, Literal
from urllib.parse import urlencode, urlsplit

import httpx

from suanli import __version__
from suanli.i18n import LANGUAGES, normalize, translate
from suanli.monitoring.alerts import (
    Alert,
    FieldError,
    Rule,
    format_value,
    subject,
    summary,
)
from suanli.monitoring.model import METRICS

Kind = Literal["webhook", "wecom", "dingtalk", "feishu", "email"]
KINDS: tuple[str, ...] = ("webhook", "wecom", "dingtalk", "feishu", "email")
PAYLOAD_VERSION = "1"
MAX_NAME_LENGTH = 128
MAX_URL_LENGTH = 2048

# Retries: the n-th failed attempt waits retry_delay(n) = 5 s · 2^(n-1), at most 10 min, before
# the next: 5, 10, 20, 40, 80, 160, 320, 600, 600 s. After MAX_ATTEMPTS failed attempts (about
# 31 minutes (1835 s) after the first, plus the attempts' own time) the notification is given up.
BASE_DELAY = 5.0
MAX_DELAY = 600.0
MAX_ATTEMPTS = 10

# Robot error codes that mean "too many messages, later": worth a retry. Other codes (a bad
# token, a failed signature, a keyword the robot wants) will fail again the same way.
_RATE_LIMITED = {
    "dingtalk": {130101},  # send too fast, exceed 20 times per minute
    "wecom": {45009},  # api freq out of limit
    "feishu": {9499, 11232},  # too many requests / frequency limited
}
# Markdown robots show at most a few kilobytes (WeCom: 4096 bytes of content).
_MAX_TEXT_BYTES = 4000
_ZERO_TIME = "0001-01-01T00:00:00Z"


@dataclass(frozen=True)
class Channel:
    id: int
    name: str
    kind: Kind
    url: str  # webhook/robot URL; email: "smtp://host:port" or "smtps://host:port"
    secret: str = field(default="", repr=False)  # signing secret (DingTalk, Feishu, webhook)
    email_from: str = ""
    email_to: tuple[str, ...] = ()
    username: str = ""  # SMTP login, when set
    password: str = field(default="", repr=False)
    language: str = "en"  # of the messages: "en" or "zh-CN"


@dataclass(frozen=True)
class Notice:
    """One alert change, ready to be sent; `notice()` makes one from a rule and an alert."""

    rule: str  # the rule's name
    severity: str
    state: Literal["firing", "resolved"]
    labels: Mapping[str, str]
    value: float | None
    threshold: float | None  # None for event rules
    started_at: datetime
    resolved_at: datetime | None
    summary: str  # one line, in the channel's language
    link: str = ""  # the console page of the alert, absolute; may be empty
    title: str = ""  # a short title (e-mail subject); derived from the rest when empty
    unit: str = ""  # the metric's unit (model.METRICS), to format value and threshold
    op: str = ""  # the rule's comparison, shown before the threshold


class DeliveryError(Exception):
    """A notification did not get through. `reason` is short and safe to show and store
    (it never holds the URL, which for robots carries the access token); `retryable` tells
    whether trying again later may help."""

    def __init__(self, reason: str, *, retryable: bool = True) -> None:
        reason = " ".join(reason.split())[:300] or "unknown error"
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


# ---------------------------------------------------------------------------------------------
# Validation


def _check_address(field_name: str, address: object) -> str:
    if not isinstance(address, str):
        raise FieldError(field_name, "must be an e-mail address")
    _, parsed = parseaddr(address)
    if (
        not parsed
        or "@" not in parsed
        or parsed.startswith("@")
        or parsed.endswith("@")
        or any(c in address for c in "\r\n,;")
    ):
        raise FieldError(field_name, f"{address!r} is not an e-mail address")
    return address.strip()


def validate_channel(channel: Channel) -> Channel:
    """The channel, checked and normalised (email_to as a tuple). Raises FieldError (a
    ValueError) naming the first bad field: name, kind, url, email_from, email_to, language."""
    if not isinstance(channel.name, str) or not channel.name.strip():
        raise FieldError("name", "must not be empty")
    if len(channel.name) > MAX_NAME_LENGTH:
        raise FieldError("name", f"must be at most {MAX_NAME_LENGTH} characters")
    if channel.kind not in KINDS:
        raise FieldError("kind", f"must be one of {', '.join(KINDS)}")
    url = channel.url.strip() if isinstance(channel.url, str) else ""
    if len(url) > MAX_URL_LENGTH:
        raise FieldError("url", f"must be at most {MAX_URL_LENGTH} characters")
    if any(c.isspace() for c in url):
        raise FieldError("url", "must not contain spaces")
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError:
        raise FieldError("url", "has an invalid port") from None
    email_to: tuple[str, ...] = ()
    if channel.kind == "email":
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise FieldError("url", "must be smtp://host:port or smtps://host:port")
        if parts.username or parts.password:
            raise FieldError("url", "must not hold credentials: use username and password")
        _check_address("email_from", channel.email_from)
        if isinstance(channel.email_to, str) or not channel.email_to:
            raise FieldError("email_to", "needs at least one recipient")
        email_to = tuple(_check_address("email_to", address) for address in channel.email_to)
    elif parts.scheme not in ("http", "https") or not parts.hostname:
        raise FieldError("url", "must be an http:// or https:// URL")
    if channel.language not in LANGUAGES:
        raise FieldError("language", f"must be one of {', '.join(LANGUAGES)}")
    return replace(channel, url=url, email_to=email_to)


# ---------------------------------------------------------------------------------------------
# What is said


_OP_SIGNS = {">": ">", ">=": "≥", "<": "<", "<=": "≤", "==": "=", "!=": "≠"}


def _epoch_datetime(seconds: float) -> datetime:
    # Local time of the server (with its offset) reads best in messages; JSON says UTC.
    return datetime.fromtimestamp(seconds, UTC).astimezone()


def notice(rule: Rule, alert: Alert, *, language: str, link: str = "") -> Notice:
    """The notice of an alert change for a channel speaking `language` (the channel's).

    `rule` stays the stored name (what silences and webhook receivers match as `alertname`);
    the title and the summary read in `language`, default rules' names included."""
    unit = METRICS[rule.metric].unit if rule.kind == "metric" and rule.metric in METRICS else ""
    state: Literal["firing", "resolved"] = "resolved" if alert.state == "resolved" else "firing"
    return Notice(
        rule=rule.name,
        severity=rule.severity,
        state=state,
        labels=dict(alert.labels),
        value=alert.value,
        threshold=rule.threshold if rule.kind == "metric" else None,
        started_at=_epoch_datetime(alert.since),
        resolved_at=_epoch_datetime(alert.resolved_at) if alert.resolved_at is not None else None,
        summary=summary(rule, alert, language),
        link=link,
        title=subject(rule, alert, language),
        unit=unit,
        op=rule.op if rule.kind == "metric" else "",
    )


def _texts(channel: Channel) -> dict[str, str]:
    """The channel's words (`alert.channel.*` in the catalogues), in its language."""
    keys = (
        "rule",
        "state",
        "severity",
        "value",
        "threshold",
        "started",
        "resolved",
        "labels",
        "open",
        "firing",
        "resolved_state",
        "info",
        "warning",
        "critical",
        "footer",
        "colon",
    )
    return {key: translate(f"alert.channel.{key}", channel.language) for key in keys}


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _shown_time(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S %z")


def _number(value: float | None) -> float | None:
    """A number JSON can carry: NaN and infinities become null."""
    return float(value) if value is not None and math.isfinite(value) else None


def _title(channel: Channel, item: Notice) -> str:
    if item.title:
        return item.title
    texts = _texts(channel)
    state = texts["resolved_state" if item.state == "resolved" else "firing"]
    return f"[{state} {texts.get(item.severity, item.severity)}] {item.rule}"


def _facts(channel: Channel, item: Notice) -> list[tuple[str, str]]:
    """The notice as (heading, text) pairs, in the channel's language."""
    texts = _texts(channel)
    language = normalize(channel.language)
    unit = item.unit or "count"
    facts = [
        (texts["rule"], item.rule),
        (texts["state"], texts["resolved_state" if item.state == "resolved" else "firing"]),
        (texts["severity"], texts.get(item.severity, item.severity)),
    ]
    if item.value is not None:
        facts.append((texts["value"], format_value(item.value, unit, language)))
    if item.threshold is not None:
        threshold = format_value(item.threshold, unit, language)
        facts.append((texts["threshold"], f"{_OP_SIGNS.get(item.op, item.op)} {threshold}".strip()))
    facts.append((texts["started"], _shown_time(item.started_at)))
    if item.resolved_at is not None:
        facts.append((texts["resolved"], _shown_time(item.resolved_at)))
    if item.labels:
        labels = ", ".join(f"{key}={value}" for key, value in sorted(item.labels.items()))
        facts.append((texts["labels"], labels))
    return facts


def _clip(text: str, limit: int = _MAX_TEXT_BYTES) -> str:
    data = text.encode()
    if len(data) <= limit:
        return text
    return data[: limit - 3].decode(errors="ignore") + "..."


def text(channel: Channel, item: Notice) -> str:
    """The plain-text message (Feishu, e-mail): the summary, the facts, the link."""
    lines = [item.summary, ""]
    colon = _texts(channel)["colon"]
    lines += [f"{heading}{colon}{value}" for heading, value in _facts(channel, item)]
    if item.link:
        lines += ["", f"{_texts(channel)['open']}{colon}{item.link}"]
    return "\n".join(lines)


def _markdown_wecom(channel: Channel, item: Notice) -> str:
    color = "info" if item.state == "resolved" else "warning"
    lines = [f'**<font color="{color}">{_title(channel, item)}</font>**', item.summary, ""]
    lines += [
        f'> {heading}{_texts(channel)["colon"]}<font color="comment">{value}</font>'
        for heading, value in _facts(channel, item)
    ]
    if item.link:
        lines += ["", f"[{_texts(channel)['open']}]({item.link})"]
    return _clip("\n".join(lines))


def _markdown_dingtalk(channel: Channel, item: Notice) -> str:
    lines = [f"#### {_title(channel, item)}", "", item.summary, ""]
    colon = _texts(channel)["colon"]
    lines += [f"- **{heading}**{colon}{value}" for heading, value in _facts(channel, item)]
    if item.link:
        lines += ["", f"[{_texts(channel)['open']}]({item.link})"]
    return _clip("\n".join(lines))


def _fingerprint(labels: Mapping[str, str]) -> str:
    canonical = json.dumps(sorted(labels.items()), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _webhook(channel: Channel, item: Notice) -> dict[str, Any]:
    labels = {str(k): str(v) for k, v in sorted(item.labels.items())}
    alert_labels = {"alertname": item.rule, "severity": item.severity, **labels}
    annotations = {"summary": item.summary}
    if item.value is not None:
        annotations["value"] = str(item.value)
    if item.threshold is not None:
        annotations["threshold"] = f"{item.op} {item.threshold}".strip()
    starts_at, ends_at = _iso(item.started_at), _iso(item.resolved_at)
    fingerprint = _fingerprint(alert_labels)
    return {
        "version": PAYLOAD_VERSION,
        "source": "suanli",
        "status": item.state,
        "rule": item.rule,
        "severity": item.severity,
        "labels": labels,
        "value": _number(item.value),
        "threshold": _number(item.threshold),
        "startsAt": starts_at,
        "endsAt": ends_at,
        "summary": item.summary,
        "link": item.link,
        "receiver": channel.name,
        "groupKey": f"suanli:{fingerprint}",
        "truncatedAlerts": 0,
        "groupLabels": {"alertname": item.rule},
        "commonLabels": alert_labels,
        "commonAnnotations": annotations,
        "externalURL": item.link,
        "alerts": [
            {
                "status": item.state,
                "labels": alert_labels,
                "annotations": annotations,
                "startsAt": starts_at,
                "endsAt": ends_at or _ZERO_TIME,
                "generatorURL": item.link,
                "fingerprint": fingerprint,
            }
        ],
    }


def dingtalk_sign(secret: str, timestamp_ms: int) -> str:
    """DingTalk's robot signature: base64(HMAC-SHA256(key=secret, f"{timestamp}\\n{secret}")),
    before URL encoding."""
    digest = hmac.new(
        secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256
    ).digest()
    return base64.b64encode(digest).decode()


def feishu_sign(secret: str, timestamp_s: int) -> str:
    """Feishu/Lark's bot signature: base64(HMAC-SHA256(key=f"{timestamp}\\n{secret}", b""))."""
    digest = hmac.new(f"{timestamp_s}\n{secret}".encode(), b"", hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def payload(channel: Channel, item: Notice, *, now: float) -> dict[str, Any]:
    """The JSON body an HTTP channel receives (`now` only matters to Feishu's signature)."""
    if channel.kind == "webhook":
        return _webhook(channel, item)
    if channel.kind == "wecom":
        return {"msgtype": "markdown", "markdown": {"content": _markdown_wecom(channel, item)}}
    if channel.kind == "dingtalk":
        markdown = {"title": _title(channel, item), "text": _markdown_dingtalk(channel, item)}
        return {"msgtype": "markdown", "markdown": markdown}
    if channel.kind == "feishu":
        body: dict[str, Any] = {}
        if channel.secret:
            timestamp = int(now)
            body = {"timestamp": str(timestamp), "sign": feishu_sign(channel.secret, timestamp)}
        return {**body, "msg_type": "text", "content": {"text": _clip(text(channel, item))}}
    raise ValueError(f"a {channel.kind} channel has no HTTP payload")


def request(channel: Channel, item: Notice, *, now: float) -> tuple[str, bytes, dict[str, str]]:
    """The URL, body and headers of the POST that `deliver` makes for an HTTP channel."""
    url = channel.url
    body = json.dumps(payload(channel, item, now=now), ensure_ascii=False).encode()
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "User-Agent": f"Suanli/{__version__}",
    }
    if channel.kind == "dingtalk" and channel.secret:
        timestamp = int(now * 1000)
        query = urlencode(
            {"timestamp": timestamp, "sign": dingtalk_sign(channel.secret, timestamp)}
        )
        url += ("&" if urlsplit(url).query else ("" if url.endswith("?") else "?")) + query
    if channel.kind == "webhook" and channel.secret:
        timestamp = str(int(now))
        signed = timestamp.encode() + b"." + body
        signature = hmac.new(channel.secret.encode(), signed, hashlib.sha256).hexdigest()
        headers["X-Suanli-Timestamp"] = timestamp
        headers["X-Suanli-Signature"] = f"sha256={signature}"
    return url, body, headers


# ---------------------------------------------------------------------------------------------
# Delivery


def deliver(
    channel: Channel,
    item: Notice,
    *,
    now: float,
    timeout: float = 10,
    ssl_context: ssl.SSLContext | None = None,
) -> None:
    """Send the notice, or raise DeliveryError. `ssl_context` replaces the system's trust
    (e.g. a company CA for an internal webhook or mail server)."""
    if channel.kind == "email":
        _send_email(channel, item, now=now, timeout=timeout, ssl_context=ssl_context)
    else:
        _post(channel, item, now=now, timeout=timeout, ssl_context=ssl_context)


def _post(
    channel: Channel,
    item: Notice,
    *,
    now: float,
    timeout: float,
    ssl_context: ssl.SSLContext | None,
) -> None:
    url, body, headers = request(channel, item, now=now)
    try:
        response = httpx.post(
            url,
            content=body,
            headers=headers,
            timeout=timeout,
            verify=ssl_context if ssl_context is not None else True,
            follow_redirects=False,
        )
    except httpx.TimeoutException:
        raise DeliveryError(f"no answer within {timeout:g} s") from None
    except httpx.HTTPError as error:
        raise DeliveryError(_transport_reason(error)) from None
    if not 200 <= response.status_code < 300:
        retryable = response.status_code >= 500 or response.status_code in (408, 425, 429)
        reason = f"HTTP {response.status_code}: {response.text[:200]}"
        raise DeliveryError(reason, retryable=retryable)
    if channel.kind in ("wecom", "dingtalk", "feishu"):
        _check_robot_answer(channel.kind, response)


def _transport_reason(error: Exception) -> str:
    cause: BaseException = error
    while cause.__context__ is not None and not str(cause):
        cause = cause.__context__
    return f"{type(error).__name__}: {cause}" if str(cause) else type(error).__name__


def _check_robot_answer(kind: str, response: httpx.Response) -> None:
    try:
        answer = response.json()
    except ValueError:
        raise DeliveryError(f"not a JSON answer: {response.text[:100]}", retryable=False) from None
    if not isinstance(answer, dict):
        raise DeliveryError(f"unexpected answer: {response.text[:100]}", retryable=False)
    if kind == "feishu":
        code = answer.get("code", answer.get("StatusCode", 0))
        message = answer.get("msg", answer.get("StatusMessage", ""))
    else:
        code, message = answer.get("errcode", 0), answer.get("errmsg", "")
    if code not in (0, None):
        retryable = code in _RATE_LIMITED.get(kind, set())
        raise DeliveryError(f"{kind} error {code}: {message}", retryable=retryable)


def _send_email(
    channel: Channel,
    item: Notice,
    *,
    now: float,
    timeout: float,
    ssl_context: ssl.SSLContext | None,
) -> None:
    parts = urlsplit(channel.url)
    implicit_tls = parts.scheme == "smtps"
    host = parts.hostname or ""
    port = parts.port or (465 if implicit_tls else 25)
    context = ssl_context or ssl.create_default_context()

    message = EmailMessage()
    message["Subject"] = _title(channel, item)
    message["From"] = channel.email_from
    message["To"] = ", ".join(channel.email_to)
    message["Date"] = formatdate(now, localtime=True)
    message["Message-ID"] = make_msgid("suanli")
    message["Auto-Submitted"] = "auto-generated"
    footer = _texts(channel)["footer"]
    message.set_content(f"{text(channel, item)}\n\n-- \n{footer}\n")

    local_hostname = socket.gethostname() or "localhost"
    try:
        if implicit_tls:
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                host, port, local_hostname=local_hostname, timeout=timeout, context=context
            )
        else:
            smtp = smtplib.SMTP(host, port, local_hostname=local_hostname, timeout=timeout)
        with smtp:
            smtp.ehlo()
            secure = implicit_tls
            if not implicit_tls and smtp.has_extn("starttls"):
                smtp.starttls(context=context)
                smtp.ehlo()
                secure = True
            if channel.username:
                if not secure:
                    raise DeliveryError(
                        "the server offers no STARTTLS: the password is not sent in clear",
                        retryable=False,
                    )
                smtp.login(channel.username, channel.password)
            refused = smtp.send_message(
                message, from_addr=channel.email_from, to_addrs=list(channel.email_to)
            )
    except DeliveryError:
        raise
    except smtplib.SMTPAuthenticationError as error:
        raise DeliveryError(f"login refused: {error.smtp_code}", retryable=False) from None
    except smtplib.SMTPRecipientsRefused as error:
        codes = [code for code, _ in error.recipients.values()]
        reason = f"recipients refused: {', '.join(error.recipients)}"
        raise DeliveryError(reason, retryable=all(code < 500 for code in codes)) from None
    except smtplib.SMTPResponseException as error:
        reason = f"SMTP {error.smtp_code}: {_smtp_text(error.smtp_error)}"
        raise DeliveryError(reason, retryable=error.smtp_code < 500) from None
    except (smtplib.SMTPException, OSError) as error:
        raise DeliveryError(f"{type(error).__name__}: {error}") from None
    if refused:
        raise DeliveryError(f"recipients refused: {', '.join(refused)}", retryable=False)


def _smtp_text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def retry_delay(attempts: int) -> float:
    """Seconds to wait after `attempts` failed attempts (1 after the first failure) before the
    next: 5 s doubled each time, at most 10 minutes (see MAX_ATTEMPTS)."""
    return min(BASE_DELAY * 2 ** (min(max(attempts, 1), 32) - 1), MAX_DELAY)


def should_retry(error: DeliveryError, attempts: int) -> bool:
    """Whether a notification that failed `attempts` times, the last with `error`, is tried
    again (after `retry_delay(attempts)`) rather than given up."""
    return error.retryable and attempts < MAX_ATTEMPTS
