"""Command line: `nra [run|plan|clean] [--flags]`; every flag has the original env var too.

Exit codes: 0 success, 1 a run that failed (ONESHOT, CLEANANDEXIT, plan), 2 bad settings.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from nra import __version__
from nra.observe.logs import setup_logging
from nra.settings import ENV_NAMES, Settings, SettingsError, default_text, kind_of, load_settings

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nra",
        description="MetalLB node route agent: policy routing so that LoadBalancer replies "
        "return through the BGP peers. Every flag can also be given as the environment "
        "variable named in brackets.",
    )
    parser.add_argument("--version", action="version", version=f"nra {__version__}")
    parser.add_argument("--dry-run", action="store_true",
                        help="same as the `plan` command: print what would change, change nothing")
    parser.add_argument("command", nargs="?", default="run", choices=["run", "plan", "clean"],
                        help="run (default: daemon, or ONESHOT/CLEANANDEXIT), "
                        "plan (print what would change, change nothing), clean (= CLEANANDEXIT); "
                        "`nra status [--json]` asks a running agent what it holds (see nra status --help)")
    for field, info in Settings.model_fields.items():
        extra, env = info.json_schema_extra, ENV_NAMES[field]
        text = (info.description or "").replace("`", "").replace("%", "%%")
        if extra["switch"]:
            parser.add_argument(extra["flag"], dest=field, action="store_const", const=True, default=None,
                                help=f"{text} [{env}=1]")
        else:
            kind = kind_of(field)
            bounds = f"; {kind.bounds()}" if kind.bounds() else ""
            parser.add_argument(extra["flag"], dest=field, metavar=extra.get("metavar") or kind.metavar,
                                default=None, help=f"{text} (default: {default_text(field)}{bounds}) [{env}]")
    return parser


def main(argv: list[str] | None = None) -> int:
    from nra import lazy_imports

    lazy_imports.install()  # no-op if pyroute2 is already loaded
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["status"]:  # a client of the running agent: none of the agent's settings
        from nra.observe.status_report import main as status_main

        return status_main(argv[1:])
    args = build_parser().parse_args(argv)
    if args.dry_run:
        args.command = "plan"
    overrides = {k: v for k, v in vars(args).items() if k not in ("command", "dry_run")}
    if args.command == "clean":
        overrides["cleanandexit"] = True
    try:
        settings = load_settings(**overrides)
    except SettingsError as exc:
        print(f"nra: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level, settings.log_format)
    try:
        from nra.daemon.modes import run

        return asyncio.run(run(settings, args.command))
    except KeyboardInterrupt:
        return 130


def entry() -> None:
    """The `nra` command and `python -m nra`: main(), then exit at once. Every task and thread
    of the run has ended by then; Python's own teardown would free every object one by one
    (0.25 s for a 100,000-prefix intent, a quarter of a ONESHOT's budget at 10,000), where
    the kernel frees a process at once. Only the output buffers need flushing."""
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    entry()
