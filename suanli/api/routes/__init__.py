"""One router per resource; each handler validates, calls one service, shapes the answer."""
