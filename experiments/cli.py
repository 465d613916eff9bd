"""What every command does around its work: a user's error is one line on stderr and exit code 2.

    from experiments import cli
    ...
    if __name__ == "__main__":
        cli.run(main)

`error: <what>, <where>, <what to do>`: the library's messages name the file and line, the option,
or the run directory, and what to change. Flag errors (an unknown `--config.` key, a value of the
wrong type) are caught while the flags are parsed. The traceback is printed only with `--verbose`
or `JAXREVIEWS_DEBUG=1`. A full disk names the file it could not write and the last complete
checkpoint. Programming errors (anything else) keep their traceback: they are bugs to report.
"""
from __future__ import annotations

import difflib
import errno
import os
import sys
import traceback

from absl import app, flags

flags.DEFINE_bool("verbose", False, "Print the traceback of an error (also: JAXREVIEWS_DEBUG=1).")

USAGE_EXIT = 2


class UserError(Exception):
    """An error the user can act on, raised by the commands themselves."""


def _debug() -> bool:
    return os.environ.get("JAXREVIEWS_DEBUG", "") not in ("", "0") or "--verbose" in sys.argv


def _user_errors() -> tuple[type, ...]:
    from jaxreviews.options import ConfigError

    errors: list[type] = [UserError, ConfigError, ValueError, OSError, ImportError]
    try:
        from jaxreviews.train import NonFiniteLossError, WorkdirError

        errors += [WorkdirError, NonFiniteLossError]
    except ImportError:
        pass
    return tuple(errors)


def one_line(error: BaseException) -> str:
    """The error's message on one line: a full disk with what it was writing and the last saved step."""
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        where = f" writing {error.filename}" if error.filename else ""
        saved = last_checkpoint(error.filename)
        return (f"no space left on device{where}" +
                (f"; the last complete checkpoint is step {saved}" if saved is not None else "") +
                ": free some space and run the same command again")
    if isinstance(error, PermissionError) and error.filename:
        return f"permission denied: {error.filename}: choose a directory you can write (--workdir / --output)"
    if isinstance(error, FileNotFoundError) and error.filename and not str(error).startswith(str(error.filename)):
        return f"{error.filename}: no such file or directory"
    text = str(error) or type(error).__name__
    return " ".join(text.split())


def last_checkpoint(path) -> int | None:
    """The newest step under the `checkpoints/latest` of the run directory that holds `path`."""
    if not path and "workdir" in flags.FLAGS and flags.FLAGS["workdir"].value:
        path = flags.FLAGS["workdir"].value
    directory = os.path.abspath(str(path)) if path else None
    while directory and directory != os.path.dirname(directory):
        latest = os.path.join(directory, "checkpoints", "latest")
        if os.path.isdir(latest):
            steps = [int(n) for n in os.listdir(latest) if n.isdigit()]
            return max(steps) if steps else None
        directory = os.path.dirname(directory)
    return None


def _config_keys() -> set[str]:
    from jaxreviews.options import reference
    from jaxreviews.options.schema import walk

    return {key for key, _ in walk(reference.OPTIONS)}


def _flag_problem(argv: list[str], error: Exception) -> str:
    """A flag error as one line: an unknown `--config.` key named with the closest option."""
    keys = _config_keys()
    for arg in argv[1:]:
        if arg.startswith("--config.") and "=" in arg:
            key = arg[len("--config."):].split("=", 1)[0]
            if key not in keys:
                close = difflib.get_close_matches(key, sorted(keys), n=1)
                hint = f" (did you mean --config.{close[0]}?)" if close else ""
                return f"--config.{key}: no such option{hint}; every option: docs/options.md"
    message = " ".join(str(error).split())
    return message.replace("Could not override field", "could not set").replace(
        "cannot be casted to type", "is not a")


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing with errors as one line and exit code 2."""
    try:
        return flags.FLAGS(argv)
    except Exception as error:  # flags.Error, and config_flags' AttributeError / TypeError / ValueError
        if _debug():
            traceback.print_exc()
        print(f"error: {_flag_problem(argv, error)}", file=sys.stderr)
        sys.exit(USAGE_EXIT)


def run(main) -> None:
    """`absl.app.run(main)` with a user's errors as one line on stderr and exit code 2."""
    def guarded(argv):
        try:
            return main(argv)
        except _user_errors() as error:
            if _debug():
                traceback.print_exc()
            print(f"error: {one_line(error)}", file=sys.stderr, flush=True)
            return USAGE_EXIT

    app.run(guarded, flags_parser=parse_flags)
