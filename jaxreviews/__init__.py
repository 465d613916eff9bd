"""jaxreviews: rating prediction from review text, author and product in JAX/Flax."""

__version__ = "0.1.0"
