"""``python -m rl_tickets.export LEVEL_DIR --out DIR`` (same as ``rl-tickets-export``)."""

from rl_tickets.export.cli import main

main()
