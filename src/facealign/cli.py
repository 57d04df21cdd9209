"""The `facealign` command: the list of subcommands, each a module that owns its arguments, its run and its
printing (`HELP`, `add_arguments(parser)`, `run(args) -> exit status`; `DESCRIPTION` and `INTERRUPT_HINT`
optional), plus one wrapper that turns user errors into one line on stderr."""
from __future__ import annotations

import argparse
import importlib
import sys
import warnings

from facealign.data.errors import DataError
from facealign.data.images import ImageLoadError
from facealign.data.pts import PtsError

# Errors caused by user input: printed as one line, exit status 2, no traceback.
USER_ERRORS = (DataError, PtsError, ImageLoadError, FileNotFoundError, LookupError, ValueError)

# Subcommand -> the module that implements it, in the order `facealign --help` lists them.
SUBCOMMANDS = {
    "data": "facealign.commands.data",
    "boxes": "facealign.commands.boxes",
    "train": "facealign.commands.train",
    "baseline": "facealign.commands.baseline",
    "evaluate": "facealign.commands.evaluate",
    "experiments": "facealign.commands.experiments",
    "package": "facealign.commands.package",
    "card": "facealign.commands.card",
    "demo": "facealign.commands.demo",
    "predict": "facealign.commands.predict",
    "quantize": "facealign.commands.quantize",
    "export": "facealign.commands.export",
    "report": "facealign.commands.report",
    "serve": "facealign.serve.command",
    "bench": "facealign.commands.bench",
}


def _warn_one_line(message, category, filename, lineno, file=None, line=None):
    print(f"warning: {message}", file=sys.stderr)


class OneLineErrors(argparse.ArgumentParser):
    """A usage error (e.g. a missing --data) is one line on stderr and exit status 2, not the whole usage."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (`{self.prog} --help` lists the options)\n")


def build_parser() -> argparse.ArgumentParser:
    from facealign.version import __version__
    parser = OneLineErrors(prog="facealign", description="68-point facial landmark toolkit")
    parser.add_argument("--version", action="version", version=f"facealign {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module_name in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        description = getattr(module, "DESCRIPTION", None)
        p = sub.add_parser(name, help=module.HELP, description=description,
                           formatter_class=argparse.RawDescriptionHelpFormatter if description else argparse.HelpFormatter)
        module.add_arguments(p)
        p.set_defaults(func=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # the command line, for run records
    warnings.showwarning = _warn_one_line
    try:
        return args.func(args)
    except USER_ERRORS as e:
        print(f"facealign: error: {e}", file=sys.stderr)
        return 2
    except FloatingPointError as e:  # non-finite training loss: the message names the step and checkpoint
        print(f"facealign: training stopped: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        hint = getattr(importlib.import_module(SUBCOMMANDS[args.command]), "INTERRUPT_HINT", None)
        print("facealign: interrupted" + (f"; {hint}" if hint else ""), file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of stdout went away (`... -o - | head`): stop quietly
        return _quiet_broken_pipe()


SIGPIPE_STATUS = 141  # 128 + SIGPIPE: what a shell reports for a tool stopped by a closed pipe


def _quiet_broken_pipe() -> int:
    """Point stdout at /dev/null so the interpreter's final flush cannot raise again, and exit 141."""
    import os
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a real file (captured): nothing is flushed to a pipe
        pass
    return SIGPIPE_STATUS


if __name__ == "__main__":
    sys.exit(main())
