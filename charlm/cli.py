"""The ``charlm`` command: one subcommand per module of ``charlm.commands``.

Exit codes: 0 ok; 1 a runtime failure; 2 a usage or config error; 130 after SIGINT and 143
after SIGTERM (``charlm run`` instead checkpoints and exits 0 at the first one). Each error is
one line on stderr; a traceback means a bug.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
import warnings

from charlm import __version__
from charlm.errors import CharLMError, UsageError, one_line, raise_interrupted
from charlm.registry import DISABLE_ENV, PluginLoadWarning

COMMANDS = ["run", "recipes", "eval", "generate", "export", "info", "data", "compress", "list_plugins", "config", "plot"]


class ArgumentParser(argparse.ArgumentParser):
    """Usage errors as one line (``charlm run: usage error: ...``) and exit 2."""

    def error(self, message):
        raise UsageError(f"{message} (see {self.prog} --help)")


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="charlm", description="Byte-level language models: train, evaluate, sample, export.")
    parser.add_argument("--version", action="version", version=f"charlm {__version__}")
    parser.add_argument(
        "--disable-plugins",
        metavar="NAMES",
        default="",
        help=f"comma-separated plugin or distribution names not to load (also ${DISABLE_ENV})",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"charlm.commands.{name}").add_parser(sub)
    try:  # `charlm --print-completion bash`, with the optional extra: pip install 'charlm-toolkit[completion]'
        import shtab
    except ImportError:
        return parser
    shtab.add_argument_to(parser, "--print-completion")
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None):
    if issubclass(category, PluginLoadWarning):
        print(f"warning: {message}", file=sys.stderr)
    else:
        print(warnings.formatwarning(message, category, filename, lineno, line), file=sys.stderr, end="")


def _interrupts_raise() -> dict:
    """SIGTERM unwinds like Ctrl-C (cleanup runs) instead of killing mid-write; the previous handlers."""
    if threading.current_thread() is not threading.main_thread():  # signals belong to the main thread
        return {}
    return {sig: signal.signal(sig, raise_interrupted) for sig in (signal.SIGINT, signal.SIGTERM)}


def main(argv: list[str] | None = None) -> int:
    warnings.showwarning = _show_warning
    previous_handlers = _interrupts_raise()
    try:
        parser = build_parser()
        args, extra = parser.parse_known_args(argv)
        # overrides may follow options (`run job.toml --max-steps 5 model.n_layer=2`)
        if extra and hasattr(args, "overrides") and not any(a.startswith("-") for a in extra):
            args.overrides += extra
        elif extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        if args.disable_plugins:
            names = {n for n in os.environ.get(DISABLE_ENV, "").split(",") if n}
            names |= {n.strip() for n in args.disable_plugins.split(",") if n.strip()}
            os.environ[DISABLE_ENV] = ",".join(sorted(names))
        return args.func(args) or 0
    except CharLMError as exc:
        print(f"{exc.prefix}: {one_line(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        print(str(exc) or "interrupted", file=sys.stderr)
        return getattr(exc, "exit_code", 130)
    except BrokenPipeError:  # `charlm generate ... | head`
        sys.stderr.close()
        return 0
    finally:
        for sig, handler in previous_handlers.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
