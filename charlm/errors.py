"""The errors a user can cause. The CLI turns each into one line and an exit code."""

import contextlib
import signal


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


def one_line(text: str) -> str:
    """``text`` with line breaks and other unprintable characters escaped (``\\n``, ``\\x1d``):
    a message that quotes user input (a key, a path) still prints as one line."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM, raised where the program is, so that ``finally`` blocks remove partial files.

    The CLI exits 128 + the signal's number: 130 for SIGINT, 143 for SIGTERM (the shell's codes).
    """

    def __init__(self, signum: int):
        self.signal = signal.Signals(signum)
        super().__init__(f"interrupted by {self.signal.name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signal.value


def raise_interrupted(signum, frame):
    """A signal handler: SIGINT and SIGTERM alike become ``Interrupted``."""
    raise Interrupted(signum)


def os_error(exc: BaseException | None) -> OSError | None:
    """The OSError behind ``exc``: itself, or one it was raised from or during (torch wraps a full disk)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


@contextlib.contextmanager
def file_errors(path=None):
    """A full disk or an unwritable path is the user's to fix: one line naming the file, not a traceback."""
    try:
        yield
    except CharLMError:
        raise
    except Exception as exc:
        error = os_error(exc)
        if error is None:
            raise
        raise CharLMError(f"{error.filename or path or 'file system'}: {error.strerror or error}") from exc


def first_line(exc: BaseException) -> str:
    """``exc`` as one line: its message's first line (torch's run to pages), or its type's name.

    A first line that ends in ":" introduces the next one ("Error(s) in loading state_dict
    for ByteLM:"), so the two are joined.
    """
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    if lines[0].endswith(":") and len(lines) > 1:
        return f"{lines[0]} {lines[1]}"
    return lines[0]
