"""Business logic, one module per concern. Routers and the CLI server command call these.

Each mutating function takes a write session and an `Actor`, writes its audit event in the
same transaction as the change, and commits: a change is never recorded without its audit
event, nor the other way round.
"""
