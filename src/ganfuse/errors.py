"""Errors a user can cause. The CLI prints them as one line on stderr and exits with code 2."""


class UserError(Exception):
    """Base class: a mistake in the user's input, config or environment, with a message that says what to do."""


class ConfigError(UserError):
    """An invalid config key or value; the message names the key."""


class DataError(UserError):
    """A dataset that cannot be read or is empty; the message names the path or dataset."""


class CheckpointError(UserError):
    """A checkpoint that is missing, corrupt, untrusted or incompatible with the config."""


class OfflineError(UserError):
    """Something needs the network (weights, a dataset download) and the machine is offline."""
