"""Typed exceptions of the runtime.

Every user mistake the engine can detect raises a subclass of `UemError`; the CLI turns them into
one line on stderr and exit code 2. Anything else escaping is a bug.
"""

from __future__ import annotations


class UemError(Exception):
    """Base class of every error uem raises on purpose."""


class ImageError(UemError, ValueError):
    """An input image cannot be used (missing, empty, truncated, not an image, too large)."""


class BundleError(UemError):
    """A bundle is missing, corrupt, tampered with or of an unsupported format."""


class BundleVersionError(BundleError):
    """The bundle's format version is not one this engine reads."""


class UnknownDomainError(UemError, KeyError):
    """A domain name that the bundle does not hold."""

    def __init__(self, name: str, known: list[str] | tuple[str, ...]):
        self.name = name
        self.known = list(known)
        super().__init__(name)

    def __str__(self) -> str:
        known = ", ".join(self.known) if self.known else "(none)"
        return f"unknown domain {self.name!r}; the bundle has: {known}"


class DataError(UemError):
    """A data directory that does not have the expected DATA/<domain>/**/<image> layout."""


class BackendError(UemError):
    """The vector database serving a bundle's domains failed or does not match the bundle."""


class MissingDependencyError(UemError):
    """An optional package is needed for this command (the message says which extra to install)."""
