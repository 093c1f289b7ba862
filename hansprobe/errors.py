"""One exception family, so the CLI can turn every expected failure into one line and exit code 2."""


class HansprobeError(Exception):
    """Base class: the message is one line that says what went wrong and what to do."""


class TaskError(HansprobeError, ValueError):
    """Impossible task parameters or malformed task data (NTF lines)."""


class ConfigError(HansprobeError, ValueError):
    """A model, training or analysis option that cannot work."""


class CheckpointError(HansprobeError):
    """A checkpoint directory that is missing, incomplete, corrupt or unsafe to load."""
