"""The ``keras-vit`` command line.

Each subcommand lives in its own module of ``keras_vit_cli.commands`` that
defines ``NAME`` (the subcommand), ``HELP`` (one line), ``add_arguments(parser)``
and ``run(args) -> int``; this module discovers them, so adding a command
never touches this file.

Quiet by default: building the parser imports neither ``keras_vit`` nor
TensorFlow (``--help`` and argument errors are instant), TensorFlow's
start-up and converter logs are hidden, and only keras-vit's own messages,
progress bars and warnings are shown. ``--verbose`` shows everything and
the traceback of an error; so does ``KERAS_VIT_DEBUG=1``. Errors a user can
fix are one line, ``keras-vit CMD: error: ...``, with exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

from keras_vit_cli import quiet


def _command_modules():
    import keras_vit_cli.commands as package

    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            yield importlib.import_module(f"{package.__name__}.{info.name}")


def build_parser():
    """The argument parser with every discovered subcommand."""
    parser = argparse.ArgumentParser(
        prog="keras-vit",
        description="Vision Transformer for Keras 3: train, convert, export, inspect.",
    )
    verbose = argparse.ArgumentParser(add_help=False)
    verbose.add_argument(
        "--verbose",
        action="store_true",
        help="Show TensorFlow's logs and, on an error, the traceback (also KERAS_VIT_DEBUG=1).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in _command_modules():
        command = sub.add_parser(
            module.NAME,
            help=module.HELP,
            description=getattr(module, "DESCRIPTION", module.HELP),
            parents=[verbose],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(command)
        command.set_defaults(run=module.run)
    return parser


def main(argv=None):
    """Entry point of the ``keras-vit`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    debug = args.verbose or os.environ.get("KERAS_VIT_DEBUG", "") not in ("", "0")
    prefix = f"keras-vit {args.command}"
    try:
        with quiet.session(verbose=debug, prefix=prefix):
            return args.run(args) or 0
    except KeyboardInterrupt:
        print(f"{prefix}: interrupted.", file=sys.stderr)
        return quiet.EXIT_INTERRUPTED
    except Exception as err:  # every error reaches the user as one sentence
        if debug:
            raise
        code, message = quiet.describe(err)
        print(f"{prefix}: error: {message}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
