"""Command line: `nra [run|plan|clean|status|completion] [--flags]`; every flag has the
original env var too.

Exit codes: 0 success, 1 a run that failed (ONESHOT, CLEANANDEXIT), 2 bad settings.
`nra plan`: 0 nothing to do, 2 changes pending, 1 an error (bad settings included).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys

from nra import __version__
from nra.observe.logs import setup_logging
from nra.settings import (
    ENV_NAMES,
    Settings,
    SettingsError,
    default_text,
    kind_of,
    load_settings,
)

COMMANDS = ["run", "plan", "clean", "status", "completion"]
#: flag values offered by the shell completion, besides the `a|b` metavars
_COMPLETION_VALUES = {"--log-level": "error warn info verbose debug silly", "--log-format": "text json"}


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
    parser.add_argument("command", nargs="?", default="run", choices=COMMANDS,
                        help="run (default: daemon, or ONESHOT/CLEANANDEXIT), "
                        "plan (print what would change, change nothing; exit 0 nothing to do, 2 changes "
                        "pending, 1 error), clean (= CLEANANDEXIT), status [--json] (ask a running agent "
                        "what it holds: nra status --help), completion bash|zsh (a shell completion script)")
    parser.add_argument("-o", "--output", choices=["text", "json"], default="text",
                        help="plan's output: text (ip-like lines) or json (one document)")
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
    from nra.daemon.memory import limit_arenas

    limit_arenas()  # before any thread starts: only arenas made after it are limited
    lazy_imports.install()  # no-op if pyroute2 is already loaded
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["status"]:  # a client of the running agent: none of the agent's settings
        from nra.observe.status_report import main as status_main

        return status_main(argv[1:])
    if argv[:1] == ["completion"]:
        return print_completion(argv[1:])
    args = build_parser().parse_args(argv)
    if args.dry_run:
        args.command = "plan"
    overrides = {k: v for k, v in vars(args).items() if k not in ("command", "dry_run", "output")}
    if args.command == "clean":
        overrides["cleanandexit"] = True
    try:
        settings = load_settings(**overrides)
    except SettingsError as exc:
        print(f"nra: {exc}", file=sys.stderr)
        return 1 if args.command == "plan" else 2  # plan's 2 means "changes pending"
    setup_logging(settings.log_level, settings.log_format)
    if settings.oneshot or settings.cleanandexit or args.command == "plan":
        # A one-off run: the cyclic collector is not run at all. Its one reconcile allocates
        # the configuration's and the kernel's objects (a million at 100,000 prefixes) and
        # the process then ends (entry(): os._exit): each full collection on the way walked
        # all of them (~10% of a second ONESHOT's CPU at 100,000, perf), to free nothing
        # that matters before the exit.
        gc.disable()
    if args.command != "plan" and not settings.cleanandexit:
        from nra.daemon.wiring import prefetch_kernel  # (a light import: the parts are imported later)

        # what the first reconcile reads longest, read in a thread from here, so that it
        # overlaps the daemon's imports too (modes.run asks again: the same read)
        prefetch_kernel(settings)
    try:
        from nra.daemon.modes import run

        return asyncio.run(run(settings, args.command, args.output))
    except KeyboardInterrupt:
        return 130


def completion_script() -> str:
    """A bash completion function for nra, built from the parser (zsh runs it through
    bashcompinit): the commands, every flag, and the values of flags that have a fixed set."""
    from nra.observe.status_report import build_parser as status_parser

    status_flags = " ".join(f for action in status_parser()._actions for f in action.option_strings)
    flags, files, values = [], [], dict(_COMPLETION_VALUES)
    for action in build_parser()._actions:
        flags += action.option_strings
        metavar = action.metavar or ""
        for flag in action.option_strings:
            if action.choices and flag.startswith("-"):
                values[flag] = " ".join(action.choices)
            elif "|" in metavar:
                values[flag] = metavar.replace("|", " ")
            elif metavar == "PATH":
                files.append(flag)
    cases = "".join(f'    {flag}) COMPREPLY=($(compgen -W "{words}" -- "$cur")); return;;\n'
                    for flag, words in sorted(values.items()))
    return (
        "_nra() {\n"
        '  local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}\n'
        '  case $prev in\n'
        f'{cases}'
        f'    {"|".join(files)}) COMPREPLY=($(compgen -f -- "$cur")); return;;\n'
        '    completion) COMPREPLY=($(compgen -W "bash zsh" -- "$cur")); return;;\n'
        '  esac\n'
        '  if [[ ${COMP_WORDS[1]} == status ]]; then\n'
        f'    COMPREPLY=($(compgen -W "{status_flags}" -- "$cur")); return\n'
        '  fi\n'
        '  if [[ $COMP_CWORD -eq 1 && $cur != -* ]]; then\n'
        f'    COMPREPLY=($(compgen -W "{" ".join(COMMANDS)}" -- "$cur")); return\n'
        '  fi\n'
        f'  COMPREPLY=($(compgen -W "{" ".join(flags)}" -- "$cur"))\n'
        "}\n"
        "complete -F _nra nra\n"
    )


def print_completion(argv: list[str]) -> int:
    """`nra completion bash|zsh`: print the script to source (`source <(nra completion bash)`)."""
    if argv not in (["bash"], ["zsh"]):
        print("usage: nra completion bash|zsh", file=sys.stderr)
        return 2
    if argv == ["zsh"]:  # zsh runs bash completion functions through bashcompinit
        print("autoload -U +X bashcompinit && bashcompinit")
    print(completion_script(), end="")
    return 0


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
