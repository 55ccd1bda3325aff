"""The project's error types. The CLI turns any :class:`O3SRLError` into one line on stderr and exit status 2."""


class O3SRLError(Exception):
    """A user-facing error: bad input, a wrong config, an unknown task. Its message names the problem."""


class ConfigError(O3SRLError, ValueError):
    """A configuration value is invalid or inconsistent."""
