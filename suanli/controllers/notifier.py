"""Delivers queued alert notifications, retrying with backoff, in a loop of its own: a slow or
dead webhook delays only other notifications, never collection or scheduling."""

import logging
import time

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from suanli.config import Settings
from suanli.db.engine import Database
from suanli.db.models import AlertChannel, AlertEvent, AlertRule, Notification, utcnow
from suanli.monitoring import alerts, channels
from suanli.monitoring.model import labels_of
from suanli.services.alerting import rule_of, utc

log = logging.getLogger("suanli.alerts")
BATCH = 20


class NotifierController:
    name = "notifier"
    interval = 2.0

    def __init__(self, settings: Settings, database: Database):
        self.settings = settings
        self.database = database

    def tick(self) -> None:
        with self.database.reading() as session:
            due = session.scalars(
                select(Notification.id)
                .where(Notification.status == "pending", Notification.next_at <= utcnow())
                .order_by(Notification.id)
                .limit(BATCH)
            ).all()
        for notification_id in due:
            self.send(notification_id)

    def send(self, notification_id: int) -> None:
        with self.database.reading() as session:
            row = session.get(Notification, notification_id)
            if row is None or row.status != "pending":
                return
            event = session.scalar(
                select(AlertEvent)
                .options(selectinload(AlertEvent.rule))
                .where(AlertEvent.id == row.event_id)
            )
            channel_row = session.get(AlertChannel, row.channel_id)
            if event is None or channel_row is None:
                return
            channel = channels.Channel(
                id=channel_row.id,
                name=channel_row.name,
                kind=channel_row.kind,  # type: ignore[arg-type]
                url=channel_row.url,
                secret=channel_row.secret,
                email_from=channel_row.email_from,
                email_to=tuple(channel_row.email_to or ()),
                username=channel_row.username,
                password=channel_row.password,
                language=channel_row.language,
            )
            notice = self.notice(event, event.rule, row.state, channel.language)
            attempts = row.attempts
        error, retry = "", False
        try:
            channels.deliver(channel, notice, now=time.time())
        except channels.DeliveryError as failure:
            error = str(failure)[:500]
            retry = channels.should_retry(failure, attempts + 1)
        with self.database.writing() as session:
            row = session.get(Notification, notification_id)
            if row is None:
                return
            row.attempts = attempts + 1
            if not error:
                row.status, row.sent_at, row.last_error = "sent", utcnow(), ""
            else:
                row.last_error = error
                if not retry:
                    row.status = "failed"
                    log.error("alert notification %s given up: %s", row.id, error)
                else:
                    delay = channels.retry_delay(row.attempts)
                    row.next_at = utc(time.time() + delay)
                    log.warning(
                        "alert notification %s failed (%s); again in %.0f s", row.id, error, delay
                    )
            session.commit()

    def notice(
        self, event: AlertEvent, rule_row: AlertRule, state: str, language: str
    ) -> channels.Notice:
        """The notice of one change of an alert, rebuilt from its stored event."""
        fired = event.fired_at.timestamp()
        resolved = event.resolved_at.timestamp() if event.resolved_at else None
        alert = alerts.Alert(
            rule_row.id,
            labels_of(event.labels),
            "resolved" if state == "resolved" else "firing",
            since=fired,
            fired_at=fired,
            resolved_at=resolved if state == "resolved" else None,
            value=event.value,
        )
        link = f"{self.settings.effective_public_url}/alerts"
        return channels.notice(rule_of(rule_row), alert, language=language, link=link)
