"""``python -m prodcat ...``: the same command line as the ``prodcat`` console script."""

from prodcat.cli import main

main()
