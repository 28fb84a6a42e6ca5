from uem.cli.app import entry

entry()
