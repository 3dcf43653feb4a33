from suanli.cli.main import entry

entry()
