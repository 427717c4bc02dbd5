"""The package version, one place: pyproject.toml reads it (dynamic version)."""

__version__ = "0.1.0"
