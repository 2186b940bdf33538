"""Errors that reach the user as one clear line (the CLI prints them and exits with code 2)."""


class TransferlabError(Exception):
    """Base class for every error caused by the user's input, files or environment."""


class ConfigError(TransferlabError, ValueError):
    """A bad option, strategy spec or model name."""


class UnsafeFileError(TransferlabError):
    """A file that would need unpickling, or whose header lies, was refused."""


class TrainingError(TransferlabError, RuntimeError):
    """A run that cannot go on (non-finite loss, out of memory, disk full)."""


class PeerError(TransferlabError):
    """Raised on the other ranks of a distributed run when rank 0 refused the run: rank 0 prints the reason."""
