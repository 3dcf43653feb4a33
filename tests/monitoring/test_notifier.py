"""The notifier delivers queued notifications and retries with backoff: a receiver on
loopback fails twice, then takes the message; one that refuses for good is given up."""

import json
from datetime import timedelta

from sqlalchemy import select

from suanli.config import Settings
from suanli.controllers.notifier import NotifierController
from suanli.db.engine import Database
from suanli.db.models import AlertChannel, AlertEvent, AlertRule, Notification, utcnow


def queue(database: Database, url: str) -> int:
    with database.writing() as session:
        rule = session.scalar(select(AlertRule).where(AlertRule.name == "GPU lost"))
        channel = AlertChannel(name="ops", kind="webhook", url=url)
        event = AlertEvent(
            rule_id=rule.id,
            labels={"node": "n1", "gpu": "0", "uuid": "GPU-a"},
            severity="critical",
            value=0,
            summary="GPU lost",
        )
        session.add_all([channel, event])
        session.flush()
        row = Notification(event_id=event.id, channel_id=channel.id, state="firing")
        session.add(row)
        session.commit()
        return row.id


def make_due(database: Database, notification_id: int) -> None:
    with database.writing() as session:
        session.get(Notification, notification_id).next_at = utcnow() - timedelta(seconds=1)
        session.commit()


def state(database: Database, notification_id: int) -> Notification:
    with database.reading() as session:
        row = session.get(Notification, notification_id)
        session.expunge(row)
        return row


def test_a_failing_receiver_is_retried_with_growing_delays_until_it_takes_it(
    migrated_database, webhook_receiver, tmp_path
) -> None:
    receiver = webhook_receiver(failures=2)
    notifier = NotifierController(Settings(data_dir=tmp_path), migrated_database)
    notification_id = queue(migrated_database, receiver.url)
    notifier.tick()
    first = state(migrated_database, notification_id)
    assert (first.status, first.attempts) == ("pending", 1) and "503" in first.last_error
    assert 3 < (first.next_at - utcnow()).total_seconds() <= 5  # the first wait: 5 s
    notifier.tick()  # not due yet: nothing is sent again
    assert len(receiver.received) == 1
    make_due(migrated_database, notification_id)
    notifier.tick()
    second = state(migrated_database, notification_id)
    assert second.attempts == 2
    assert 8 < (second.next_at - utcnow()).total_seconds() <= 10  # then twice as long
    make_due(migrated_database, notification_id)
    notifier.tick()
    done = state(migrated_database, notification_id)
    assert (done.status, done.attempts, done.last_error) == ("sent", 3, "")
    assert receiver.received[-1]["status"] == "firing" and "GPU-a" in json.dumps(
        receiver.received[-1]
    )


def test_a_receiver_that_refuses_for_good_is_given_up(
    migrated_database, webhook_receiver, tmp_path
) -> None:
    receiver = webhook_receiver(failures=100, status=403)
    notifier = NotifierController(Settings(data_dir=tmp_path), migrated_database)
    notification_id = queue(migrated_database, receiver.url)
    notifier.tick()
    row = state(migrated_database, notification_id)
    assert (row.status, row.attempts) == ("failed", 1)  # a 403 will not get better
