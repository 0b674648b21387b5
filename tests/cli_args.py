"""Checks that an image's or a manifest's arguments are a command line the `reelforge` CLI accepts."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from unittest import mock

import click

from reelforge.cli import main

# Commands that another issue adds (observability: the queue exporter); deployment assets name them already.
NOT_YET_ON_THIS_BRANCH = {"exporter"}


def assert_cli_accepts(args: Sequence[str], env_names: Iterable[str] = ()) -> None:
    """Parse args as `reelforge ARGS` without running anything: unknown commands, options or choices fail.
    env_names: variables the container sets (options may be read from them), given a placeholder here."""
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
        with mock.patch.dict(os.environ, dict.fromkeys(env_names, "placeholder")):
            command.make_context(f"reelforge {command.name}", rest)
    except click.UsageError as exc:
        raise AssertionError(f"`reelforge {' '.join(args)}` is refused: {exc.format_message()}") from None
