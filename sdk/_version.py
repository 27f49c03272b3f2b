"""The package version, in the bottom layer so that every module can record it."""

__version__ = "0.1.0"
