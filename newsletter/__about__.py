"""The version, in one place: hatch reads it for the package metadata."""

__version__ = "0.1.0"
