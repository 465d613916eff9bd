"""Process-wide settings, made by the command-line entry points only (never by the library).

    stop = runtime.configure(compilation=config.compilation, keep_freed_memory=True)
    train_and_evaluate(config, workdir, stop=stop)    # SIGTERM sets `stop`: the run saves and returns

`configure` does what a process that trains wants and a library must not impose on its host:
- JAX's persistent compilation cache in `compilation.cache_dir` ("auto": $JAX_COMPILATION_CACHE_DIR
  or ~/.cache/jaxreviews/jax-cache), with programs faster to compile than
  `cache_min_compile_seconds` left out and the cache capped at `cache_max_bytes` (least recently
  used programs evicted first), so a second run of the same shapes compiles nothing;
- glibc keeps freed memory (`allocator.keep_freed_memory`: ~1.5x faster steps on CPU);
- SIGTERM sets the returned event instead of killing the process (preemption: the loop saves the
  step it is at and returns; the same command resumes);
- the library's log records go to stdout as plain lines, other libraries' (orbax, absl, Optuna) at
  WARNING and above; orbax's tracebacks of a failed background save are left out (the run raises
  that failure as one line; JAXREVIEWS_DEBUG=1 or --verbose keeps them).
Calling it again updates the settings.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading

_stop = threading.Event()


def default_cache_dir() -> str:
    """$JAX_COMPILATION_CACHE_DIR when set, else <user cache directory>/jaxreviews/jax-cache
    ($XDG_CACHE_HOME or ~/.cache). (Not the uncapped ".../xla" of earlier versions: JAX's capped
    cache keeps an access time beside each entry, which that one's entries lack.)"""
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return os.environ["JAX_COMPILATION_CACHE_DIR"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "jaxreviews", "jax-cache")


def enable_compilation_cache(directory: str = "auto", *, min_compile_seconds: float = 0.0,
                             max_bytes: int = 2 * 2 ** 30) -> str | None:
    """Keeps compiled programs in `directory` ("auto": `default_cache_dir()`; "" leaves the cache
    off); returns the directory in use. JAX reads the setting when it first compiles."""
    import jax

    if not directory:
        return None
    directory = default_cache_dir() if directory == "auto" else directory
    directory = os.path.abspath(os.path.expanduser(directory))
    os.makedirs(directory, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_seconds))
    if max_bytes >= 0:
        try:
            import filelock  # noqa: F401  JAX's capped cache needs it, and without it caches nothing
        except ImportError:
            logging.getLogger(__name__).warning("compilation.cache_max_bytes needs the filelock package "
                                                "(pip install filelock): the cache has no size cap")
            max_bytes = -1
    jax.config.update("jax_compilation_cache_max_size", int(max_bytes))
    return directory


class _PlainFormatter(logging.Formatter):
    """The message alone for INFO, "warning: ..." / "error: ..." above it."""

    def format(self, record: logging.LogRecord) -> str:
        message = super().format(record)
        if record.levelno >= logging.WARNING:
            return f"{record.levelname.lower()}: {message}"
        return message


def _no_orbax_traceback(record: logging.LogRecord) -> bool:
    """False for an orbax record that carries a traceback (a background save that failed)."""
    return record.exc_info is None or f"{os.sep}orbax{os.sep}" not in (record.pathname or "")


def _debug() -> bool:  # experiments.cli's test too: it reads it before importing the (heavy) package
    return os.environ.get("JAXREVIEWS_DEBUG", "") not in ("", "0") or "--verbose" in sys.argv


def configure_logging(level: int = logging.INFO, stream=None) -> None:
    """jaxreviews' records as plain lines on `stream` (stdout); other libraries' from WARNING."""
    logger = logging.getLogger("jaxreviews")
    for handler in list(logger.handlers):
        if getattr(handler, "_jaxreviews", False):
            logger.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stdout)
    handler._jaxreviews = True
    handler.setFormatter(_PlainFormatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    for name in ("absl", "orbax", "jax", "optuna", "tensorflow_datasets"):
        logging.getLogger(name).setLevel(logging.WARNING)
    absl_logger = logging.getLogger("absl")  # orbax logs through absl
    absl_logger.removeFilter(_no_orbax_traceback)
    if not _debug():
        absl_logger.addFilter(_no_orbax_traceback)
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.WARNING)  # orbax reports every file it writes at INFO
    except ImportError:
        pass
    if "optuna" in sys.modules:  # Optuna sets its own level when first used: after its import only
        sys.modules["optuna"].logging.set_verbosity(sys.modules["optuna"].logging.WARNING)


def handle_sigterm() -> threading.Event:
    """SIGTERM sets the returned event (from the main thread; elsewhere nothing is installed)."""
    try:
        signal.signal(signal.SIGTERM, lambda signum, frame: _stop.set())
    except ValueError:  # not the main thread
        pass
    return _stop


COMMAND_BUFFERS = {"loops": "+WHILE,+CONDITIONAL", "off": ""}  # "default": no flag


def set_xla_flags(compilation, environ=os.environ) -> None:
    """XLA flags of the `compilation` options (read when the backend starts, so before the first
    device use): `autotune_level` >= 0 sets --xla_gpu_autotune_level, `command_buffers` other
    than "default" --xla_gpu_enable_command_buffer; a flag XLA_FLAGS already has wins."""
    wanted = {}
    level = int(compilation.get("autotune_level", -1))
    if level >= 0:
        wanted["--xla_gpu_autotune_level"] = str(level)
    buffers = compilation.get("command_buffers", "default")
    if buffers in COMMAND_BUFFERS:
        wanted["--xla_gpu_enable_command_buffer"] = COMMAND_BUFFERS[buffers]
    flags = environ.get("XLA_FLAGS", "")
    for flag, value in wanted.items():
        if flag not in flags:
            flags = f"{flags} {flag}={value}".strip()
    if flags != environ.get("XLA_FLAGS", ""):
        environ["XLA_FLAGS"] = flags


def configure(*, compilation=None, keep_freed_memory: bool = False, sigterm: bool = True,
              log_level: int = logging.INFO) -> threading.Event:
    """The settings of a training process (see the module docstring); returns the event SIGTERM sets.
    `compilation`: the config's `compilation` section (None: the cache stays as JAX has it)."""
    if keep_freed_memory:
        from jaxreviews.train import allocator

        allocator.keep_freed_memory()
    configure_logging(log_level)
    if compilation is not None:
        set_xla_flags(compilation)
        enable_compilation_cache(compilation.cache_dir, min_compile_seconds=compilation.cache_min_compile_seconds,
                                 max_bytes=compilation.cache_max_bytes)
    return handle_sigterm() if sigterm else threading.Event()
