"""Project-wide test settings.

- Hypothesis without deadlines (CI and users run on busy machines, and a property test may not fail
  because another job took the cores).
- JAX on the CPU, with one persistent compilation cache for the test session (`training.CACHE`),
  shared by the in-process runs and the subprocesses the tests start: a program any test compiled
  is read back by the others. Tests configure their own process; the library never does.
"""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

from hypothesis import settings  # noqa: E402

from tests.training import CACHE  # noqa: E402

settings.register_profile("jaxreviews", deadline=None)
settings.load_profile("jaxreviews")


def pytest_configure(config):
    from jaxreviews import runtime

    runtime.enable_compilation_cache(CACHE, min_compile_seconds=0.0)  # capped as the commands' (one setting a directory)
