"""``python -m cloudless`` is the ``cloudless`` command."""

from cloudless.cli.main import main

main()
