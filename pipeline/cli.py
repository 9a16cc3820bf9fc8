"""The `pipeline` command line: thin click commands that build a config and call ``run_*``."""

from __future__ import annotations

import errno
import sys

import click

from cache_tools.format import ShardError
from core.distributed import finish_distributed
from core.errors import UserError
from pipeline.encode_cmd import encode, shards_info
from pipeline.export_cmd import export
from pipeline.finetune_cmd import finetune, predict
from pipeline.glue_cmd import glue_eval
from pipeline.student_cmd import embed, train_student
from pipeline.verify_cmd import verify

RESUME = "rerun the same command to resume (train-student: with --resume)"


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(package_name="sra-distill")
def cli() -> None:
    """Distil a BERT teacher into a BiLSTM student by sentence representation approximation."""


def main() -> None:
    """Console entry point: known errors become one line on stderr and exit code 2."""
    try:
        cli.main(standalone_mode=False)
        finish_distributed()
    except click.exceptions.Abort:  # click turns Ctrl-C (KeyboardInterrupt) into Abort
        click.echo(f"Interrupted; {RESUME}.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except (UserError, ShardError) as exc:
        _error(str(exc))
    except OSError as exc:
        # Disk full, permission denied, missing file: the message is enough.
        message = f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": ")
        if exc.errno == errno.ENOSPC:
            message += f"; free some space and {RESUME}"
        _error(message)


def _error(message: str) -> None:
    """One line on stderr (library messages may hold newlines), exit code 2."""
    click.echo(f"error: {' '.join(message.split())}", err=True)
    sys.exit(2)


for command in (encode, shards_info, verify, train_student, embed, export, glue_eval, finetune, predict):
    cli.add_command(command)
