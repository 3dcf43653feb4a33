"""The `suanli` command: a thin shell over the SDK (and the server for `suanli server`)."""
