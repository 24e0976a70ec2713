"""jaxevo: self-evolution rounds for LLMs, JAX-native."""

__version__ = "0.1.0"
