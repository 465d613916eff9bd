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

import contextlib
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

    errors: list[type] = [UserError, app.UsageError, ConfigError, ValueError, OSError, ImportError]
    try:
        from jaxreviews.train import NonFiniteLossError, WorkdirError
        from jaxreviews.train.checkpoints import CheckpointError

        errors += [WorkdirError, NonFiniteLossError, CheckpointError]
    except ImportError:
        pass
    return tuple(errors)


def one_line(error: BaseException) -> str:
    """The error's message on one line: a full disk with what it was writing and the last saved step."""
    if (isinstance(error, OSError) and error.errno == errno.ENOSPC) or "No space left on device" in str(error):
        filename = getattr(error, "filename", None)
        workdir = flags.FLAGS["workdir"].value if "workdir" in flags.FLAGS else None
        where = f" writing {filename}" if filename else f" writing in {os.path.abspath(workdir)}" if workdir else ""
        saved = last_checkpoint(filename)
        return (f"no space left on device{where}" +
                (f"; the last complete checkpoint is step {saved}" if saved is not None else "") +
                ": free some space and run the same command again")
    if isinstance(error, PermissionError) and error.filename:
        return f"permission denied: {error.filename}: choose a directory you can write (--workdir / --output)"
    if isinstance(error, FileNotFoundError) and error.filename and not str(error).startswith(str(error.filename)):
        return f"{error.filename}: no such file or directory"
    text = str(error) or type(error).__name__
    if "Failed loading config file" in text:  # raised when the command first reads FLAGS.config
        return _flag_problem(sys.argv, error)
    return " ".join(text.split())


def last_checkpoint(path) -> int | None:
    """The newest step under the `checkpoints/latest` of the run directory that holds `path`."""
    if not path and "workdir" in flags.FLAGS and flags.FLAGS["workdir"].value:
        path = flags.FLAGS["workdir"].value
    from jaxreviews.train.checkpoints import latest_steps

    directory = os.path.abspath(str(path)) if path else None
    while directory and directory != os.path.dirname(directory):
        if os.path.isdir(os.path.join(directory, "checkpoints", "latest")):
            steps = latest_steps(directory)
            return max(steps) if steps else None
        directory = os.path.dirname(directory)
    return None


def _model_of(given: str | None) -> str | None:
    """The model of the `--config` file (`path[:presets]`; default the train command's), read from
    the config it builds without the overrides; None when it does not build."""
    import importlib.util

    path, _, arg = (given or os.path.join(os.path.dirname(__file__), "configs", "han_upa.py")).partition(":")
    try:
        spec = importlib.util.spec_from_file_location("_config_of_the_command", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.get_config(arg or None).model.name
    except Exception:  # the flag error itself says what is wrong with the file
        return None


def _flag_problem(argv: list[str], error: Exception) -> str:
    """A flag error as one line: an unknown `--config.` key named with the closest option, or an
    option of other models than the config's."""
    from jaxreviews.options import reference
    from jaxreviews.options.schema import walk

    options = dict(walk(reference.OPTIONS))
    given = next((arg.split("=", 1)[1] for arg in argv[1:] if arg.startswith("--config=")), None)
    model = _model_of(given)
    for arg in argv[1:]:
        if arg.startswith("--config.") and "=" in arg:
            key = arg[len("--config."):].split("=", 1)[0]
            if key not in options:
                close = difflib.get_close_matches(key, sorted(options), n=1)
                hint = f" (did you mean --config.{close[0]}?)" if close else ""
                return f"--config.{key}: no such option{hint}; every option: docs/options.md"
            if model is not None and not options[key].applies_to(model):
                return (f"--config.{key}: not an option of model {model} (it is one of "
                        f"{', '.join(options[key].models)}); every option: docs/options.md")
    message = " ".join(str(error).split())
    if "No such file or directory" in message and given is not None:
        return f"--config={given}: no such config file (the configs are in experiments/configs/)"
    if "Traceback" in message:  # an error inside the config file's get_config: its last line
        import re

        found = re.findall(r"\b\w*(?:Error|Exception): (.*?)(?= \w*(?:Error|Exception): |$)", message)
        if found:
            return (f"--config={given}: " if given else "") + found[-1]
    return message.replace("Could not override field", "could not set").replace(
        "cannot be casted to type", "is not a")


def define_config_file(name: str, default: str, help_text: str) -> None:
    """`config_flags.DEFINE_config_file` (locked), whose override errors, raised while the flag is
    defined (it reads the command line then), are one line and exit code 2."""
    from ml_collections import config_flags

    try:
        config_flags.DEFINE_config_file(name, default, help_text, lock_config=True)
    except Exception as error:
        if _debug():
            traceback.print_exc()
        print(f"error: {_flag_problem(sys.argv, error)}", file=sys.stderr)
        sys.exit(USAGE_EXIT)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing with errors as one line and exit code 2."""
    try:
        return flags.FLAGS(argv)
    except Exception as error:  # flags.Error, and config_flags' AttributeError / TypeError / ValueError
        if _debug():
            traceback.print_exc()
        print(f"error: {_flag_problem(argv, error)}", file=sys.stderr)
        sys.exit(USAGE_EXIT)


@contextlib.contextmanager
def written(path: str):
    """A text file at `path` that appears whole or not at all: written as `path.partial`, renamed
    when the block ends, removed when it fails. Opening it first makes a directory that cannot be
    written fail before any work."""
    path = os.path.abspath(os.path.expanduser(path))
    partial = path + ".partial"
    handle = open(partial, "w", encoding="utf-8")
    try:
        yield handle
        handle.close()
        os.replace(partial, path)
    except BaseException:
        handle.close()
        os.remove(partial)
        raise


def _quiet_shutdown() -> None:
    """After the error is reported the process ends: background threads that fail on the way
    (orbax's writers after a full disk) must not bury that line under their tracebacks."""
    import logging
    import threading

    if _debug():
        return
    threading.excepthook = lambda args: None
    logging.disable(logging.CRITICAL)
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.FATAL)
    except ImportError:
        pass


class _OrbaxErrors:
    """Drops orbax's error records (a failed save logs its threads' tracebacks before the save
    raises): the exception reaches the command, which reports it in one line."""

    def filter(self, record) -> bool:
        return not (record.levelno >= 40 and f"{os.sep}orbax{os.sep}" in record.pathname)


def _hold_save_noise() -> None:
    """A failed checkpoint save's error records, which would bury its one-line report (orbax logs
    its threads' tracebacks before the save raises). --verbose keeps them."""
    import logging

    logging.getLogger("absl").addFilter(_OrbaxErrors())


def run(main) -> None:
    """`absl.app.run(main)` with a user's errors as one line on stderr and exit code 2."""
    def guarded(argv):
        if not _debug():
            _hold_save_noise()
        try:
            return main(argv)
        except _user_errors() as error:
            if _debug():
                traceback.print_exc()
            print(f"error: {one_line(error)}", file=sys.stderr, flush=True)
            _quiet_shutdown()
            return USAGE_EXIT

    app.run(guarded, flags_parser=parse_flags)
