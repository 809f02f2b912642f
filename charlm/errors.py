"""The errors a user can cause. The CLI turns each into one line and an exit code."""


class CharLMError(Exception):
    """A runtime failure the user can act on (a failed download, a bad file): exit 1."""

    exit_code = 1
    prefix = "error"


class UsageError(CharLMError):
    """A wrong command line: exit 2."""

    exit_code = 2
    prefix = "usage error"


class ConfigError(UsageError):
    """A job config that cannot run, named by its dotted key: exit 2."""

    prefix = "config error"


class PluginError(UsageError):
    """Plugins that conflict, or a component that no installed plugin provides: exit 2."""

    prefix = "plugin error"
