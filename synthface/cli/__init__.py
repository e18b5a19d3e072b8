"""The ``synthface`` command: one thin module per command over the Python API.

Only this package prints. Every :class:`~synthface.errors.SynthfaceError` and
every bad flag becomes one ``error: ...`` line on stderr and a non-zero exit.
"""

from __future__ import annotations

import signal
import sys
import threading

import click

from .. import __version__
from ..errors import SynthfaceError
from . import (
    config_cmd,
    doctor_cmd,
    evaluate_cmd,
    generate_cmd,
    info_cmd,
    model_cmd,
    preview_cmd,
    reconstruct_cmd,
    sample,
    train_cmd,
    verify_cmd,
)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program stands so that it unwinds as from Ctrl-C: worker pools are
    stopped and temporaries removed, instead of the process vanishing and orphaning its workers."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated()


class SynthfaceGroup(click.Group):
    """A click group that maps errors to one ``error:`` line instead of tracebacks or usage dumps."""

    def main(self, args=None, prog_name=None, **extra):  # type: ignore[override]
        extra.pop("standalone_mode", None)
        main_thread = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
        try:
            self._run(args, prog_name, **extra)
        finally:
            if main_thread:
                signal.signal(signal.SIGTERM, previous)

    def _run(self, args, prog_name, **extra):  # type: ignore[no-untyped-def]
        try:
            rv = super().main(args, prog_name, standalone_mode=False, **extra)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            sub = exc.ctx.info_name if exc.ctx and exc.ctx.parent else None
            where = f"synthface {sub} --help" if sub else "synthface --help"
            click.echo(f"error: {exc.format_message().rstrip('.')}; see '{where}'", err=True)
            sys.exit(2)
        except click.Abort as exc:
            terminated = isinstance(exc.__cause__, Terminated)
            click.echo(f"error: {'terminated' if terminated else 'interrupted'}; nothing was left half-written",
                       err=True)
            sys.exit(143 if terminated else 130)
        except SynthfaceError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


@click.group(cls=SynthfaceGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="synthface")
def main() -> None:
    """Synthetic 3D face data (images, depth, 3DMM parameters) and its reconstruction trainer."""


for _module in (generate_cmd, train_cmd, evaluate_cmd, reconstruct_cmd, info_cmd, verify_cmd, preview_cmd,
                doctor_cmd, sample, model_cmd, config_cmd):
    main.add_command(_module.command)
