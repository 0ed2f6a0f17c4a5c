"""Training and evaluation of the project's own models (not on the runtime path)."""
