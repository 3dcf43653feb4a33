"""The notifier delivers queued notifications and retries with backoff: a receiver on
loopback fails twice, then takes the message; one that refuses for good is given up."""

import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import select

from suanli.config import Settings
from suanli.controllers.notifier import NotifierController
from suanli.db import migrate
from suanli.db.engine import Database
from suanli.db.models import AlertChannel, AlertEvent, AlertRule, Notification, utcnow


class FlakyReceiver:
    """Answers the first `failures` posts with `status`, then 200."""

    def __init__(self, failures: int, status: int = 503):
        self.bodies: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.bodies.append(json.loads(body))
                failing = len(outer.bodies) <= failures
                self.send_response(status if failing else 200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    db = Database(database_url)
    migrate.upgrade(db.engine)
    yield db
    db.dispose()


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
    database, tmp_path
) -> None:
    receiver = FlakyReceiver(failures=2)
    notifier = NotifierController(Settings(data_dir=tmp_path), database)
    notification_id = queue(database, receiver.url)
    notifier.tick()
    first = state(database, notification_id)
    assert (first.status, first.attempts) == ("pending", 1) and "503" in first.last_error
    assert 3 < (first.next_at - utcnow()).total_seconds() <= 5  # the first wait: 5 s
    notifier.tick()  # not due yet: nothing is sent again
    assert len(receiver.bodies) == 1
    make_due(database, notification_id)
    notifier.tick()
    second = state(database, notification_id)
    assert second.attempts == 2
    assert 8 < (second.next_at - utcnow()).total_seconds() <= 10  # then twice as long
    make_due(database, notification_id)
    notifier.tick()
    done = state(database, notification_id)
    assert (done.status, done.attempts, done.last_error) == ("sent", 3, "")
    assert receiver.bodies[-1]["status"] == "firing" and "GPU-a" in json.dumps(receiver.bodies[-1])
    receiver.server.shutdown()


def test_a_receiver_that_refuses_for_good_is_given_up(database, tmp_path) -> None:
    receiver = FlakyReceiver(failures=100, status=403)
    notifier = NotifierController(Settings(data_dir=tmp_path), database)
    notification_id = queue(database, receiver.url)
    notifier.tick()
    row = state(database, notification_id)
    assert (row.status, row.attempts) == ("failed", 1)  # a 403 will not get better
    receiver.server.shutdown()
