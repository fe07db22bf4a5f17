"""Exceptions that carry a message a user can act on.

Every error raised for bad input names the file, config key or domain at fault;
the CLI prints ``str(error)`` on one line and exits non-zero.
"""


class UsssError(Exception):
    """Base class of the errors usss-tf raises for bad input."""


class ConfigError(UsssError, ValueError):
    """A configuration file, key or override is wrong."""


class DatasetError(UsssError):
    """A dataset on disk is missing, incomplete or corrupt."""


class ExportError(UsssError):
    """An export target that already exists, or a model that does not fit its domains."""


class ServingError(UsssError):
    """A model server cannot start, or a request to one failed (names server, model, file)."""


class UnknownDomainError(UsssError, KeyError):
    """A domain name that is not in the registry."""

    def __str__(self):  # KeyError would quote the message.
        return str(self.args[0]) if self.args else ""
