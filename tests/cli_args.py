"""Checks that an image's or a manifest's arguments are a command line the `reelforge` CLI accepts."""

from __future__ import annotations

from collections.abc import Sequence

import click

from reelforge.cli import main

# Commands that another issue adds (observability: the queue exporter); deployment assets name them already.
NOT_YET_ON_THIS_BRANCH = {"exporter"}


def assert_cli_accepts(args: Sequence[str]) -> None:
    """Parse args as `reelforge ARGS` without running anything: unknown commands, options or choices fail."""
    command: click.Command = main
    rest = list(args)
    while isinstance(command, click.Group):
        assert rest, f"`reelforge {' '.join(args)}` names no command"
        name, *rest = rest
        if name not in command.commands and name in NOT_YET_ON_THIS_BRANCH:
            return
        assert name in command.commands, f"`reelforge {' '.join(args)}`: no command {name!r}"
        command = command.commands[name]
    try:
        command.make_context(f"reelforge {command.name}", rest)
    except click.UsageError as exc:
        raise AssertionError(f"`reelforge {' '.join(args)}` is refused: {exc.format_message()}") from None
