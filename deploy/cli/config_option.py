"""``--config deploy.json`` on the commands that run a tuned deployment (``serve``, ``triton``).

The file (``deploy.deployconfig``) fixes the model, the backend, its precision, threads, streams and
batching; an option that would change one of those is refused with one line (exit 2), so what runs is
exactly what ``tune`` measured. Other options (ports, model name, labels) still apply.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import click
from click.core import ParameterSource

from ..errors import OptionError

__all__ = ["config_option", "refuse_with_config", "no_model_given"]


def config_option(what: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--config FILE``; the command gets ``config: str | None``."""
    return click.option("--config", "config", type=click.Path(exists=True, dir_okay=False), default=None,
                        help=f"A deployment written by 'convmlp-deploy tune': {what} exactly its model, backend, "
                             "precision, threads, streams and batching.")


def refuse_with_config(names: Sequence[str]) -> None:
    """``OptionError`` naming the first option of ``names`` given on the command line next to ``--config``."""
    ctx = click.get_current_context()
    for name in names:
        if ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT):
            flag = "--" + name.replace("_", "-")
            raise OptionError(f"{flag} contradicts --config: the deployment fixes it (drop {flag}, or tune again)")


def no_model_given(source: Any) -> bool:
    """True when the command line names no model (``--config`` must then)."""
    return source.path is None and source.variant is None
