"""The click group every command hangs off, and the glue shared by commands.

Commands are thin: parse, call one library function, print (through ``output``: tables,
terminal-safe text, JSON). ``PacsnodeError`` (and OS
errors such as a port in use) become one line on stderr and exit code 1, never a traceback.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, TypeVar

import click

from pacsnode.cli.output import guard_stdout, print_json, print_table  # noqa: F401 (re-exported)
from pacsnode.errors import PacsnodeError

F = TypeVar("F", bound=Callable[..., Any])
DEFAULT_HOME = "pacsnode-data"


class OneLineUsageError(click.UsageError):
    """A usage error shown as one line, like every other error (the usage is one --help away)."""

    def show(self, file: Any = None) -> None:
        hint = f" (see: {self.ctx.command_path} --help)" if self.ctx is not None else ""
        click.echo(f"Error: {self.format_message()}{hint}", file=file, err=True)


class ErrorsAsMessages(click.Group):
    """A group whose commands report domain errors as one clear line."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.exceptions.NoArgsIsHelpError:
            raise  # a group called alone shows its help
        except click.UsageError as exc:
            raise OneLineUsageError(exc.format_message(), exc.ctx) from None
        except PacsnodeError as exc:
            raise click.ClickException(str(exc)) from None
        except BrokenPipeError:  # `pacsnode studies | head`: the reader left, nothing to report
            os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
            ctx.exit(0)
        except OSError as exc:
            raise click.ClickException(f"{exc.strerror or exc}{': ' + str(exc.filename) if exc.filename else ''}") from None
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort, KeyboardInterrupt):
            raise
        except Exception as exc:  # the CLI edge: one line, the traceback only on request
            if ctx.obj and ctx.obj.get("verbose", 0) >= 2:
                raise
            raise click.ClickException(
                f"internal error: {exc.__class__.__name__}: {exc} (run with -vv for the traceback)") from None


@click.group(cls=ErrorsAsMessages, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--home", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Node home folder (default: $PACSNODE_HOME, else ./pacsnode-data).")
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
@click.version_option(package_name="pacsnode")
@click.pass_context
def main(ctx: click.Context, home: Path | None, verbose: int) -> None:
    """pacsnode: a DICOM node that stores, answers peers and knows mutual recognition.

    \b
    Example:
      pacsnode --home ./pacsnode-data init --institution PRV001
      pacsnode --home ./pacsnode-data serve
    """
    ctx.ensure_object(dict)
    guard_stdout(ctx)  # no escape sequence from a DICOM value reaches the terminal, whatever the command
    ctx.obj["home"] = home or Path(os.environ.get("PACSNODE_HOME") or DEFAULT_HOME)
    ctx.obj["verbose"] = verbose


def home_of(ctx: click.Context) -> Path:
    return Path(ctx.obj["home"])


def open_node(ctx: click.Context) -> Any:
    """Open the node in this command's home (imported lazily: ``--help`` stays fast)."""
    from pacsnode.node import Node

    return Node.open(home_of(ctx))
