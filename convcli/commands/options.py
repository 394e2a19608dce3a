"""Option helpers shared by the commands."""

from __future__ import annotations

import click

from convcli.errors import ParameterError


def parsed(parse, *args):
    """A Click callback running ``parse(value, *args)``; its ParameterError becomes a usage error."""

    def callback(ctx, param, value):
        if value is None:
            return None
        try:
            return parse(value, *args)
        except ParameterError as exc:
            raise click.BadParameter(str(exc)) from None

    return callback
