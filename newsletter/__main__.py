"""`python -m newsletter` runs the CLI, so tests and cron jobs need no console script on PATH."""

from .cli import main

main()
