"""The ``pd`` executable. ``pd abort`` goes straight to its own module, and ``pd --version``
is answered here, both without the Typer app and its imports (a third of a second before
anything happens); every other command, and ``pd abort --help``, goes to the app."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args == ["--version"]:
        from orchestrator import __version__

        print(f"pd {__version__}")
        sys.exit(0)
    if args[:1] == ["abort"] and not {"-h", "--help"} & set(args):
        from orchestrator.cli.abort import main as abort

        sys.exit(abort(args[1:]))
    from orchestrator.cli.main import main as app

    app(args)
