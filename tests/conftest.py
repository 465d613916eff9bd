"""Project-wide test settings: Hypothesis without deadlines (CI and users run on busy machines, and
a property test may not fail because another job took the cores)."""
from hypothesis import settings

settings.register_profile("jaxreviews", deadline=None)
settings.load_profile("jaxreviews")
