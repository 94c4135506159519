"""What the ``hugginggpt`` subcommands share: exit codes, error lines, argument types and common options."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def error(command: str | None, message: str) -> None:
    """One line on stderr: ``hugginggpt [COMMAND]: MESSAGE``."""
    print(f"hugginggpt{' ' + command if command else ''}: {message}", file=sys.stderr)


def config_error(command: str | None, exc: Any) -> int:
    """Report a settings ``ValidationError`` (every variable and what is wrong with it), or a
    :class:`tasks.settings.RuntimeSettingError`; return the usage exit code."""
    from tasks.settings import setting_variable

    if not hasattr(exc, "errors"):
        error(command, f"invalid configuration: {exc}")
        return EXIT_USAGE
    problems = "; ".join(
        f"{'.'.join([setting_variable(str(e['loc'][0])), *map(str, e['loc'][1:])]) if e['loc'] else 'value'}: "
        f"{e['msg']}"
        for e in exc.errors()
    )
    error(command, f"invalid configuration: {problems}")
    return EXIT_USAGE


def llm_settings(command: str | None, *, local: bool = False, **overrides: Any) -> Any:
    """The settings, with a controller ready (:func:`controller_ready`; ``local``: the embedded one whatever is
    configured); ``None`` after saying what is wrong (invalid values, or what to set for the LLM), for the caller
    to exit with :data:`EXIT_USAGE`."""
    from pydantic import ValidationError

    from tasks.settings import load_settings

    try:
        settings = load_settings(**overrides)
    except ValidationError as exc:
        config_error(command, exc)
        return None
    return settings if controller_ready(command, settings, local=local) else None


def controller_ready(command: str | None, settings: Any, *, local: bool = False) -> bool:
    """Whether the controller can answer; for the embedded one, says once on stderr which model it is and how to
    switch, and downloads it (with progress) when it is not on this machine. Says what to set when it cannot."""
    from tasks.services import describe_controller, overridden, prepare_controller
    from tasks.settings import LLMNotConfiguredError

    if local or not (settings.llm_configured or "chat_model" in overridden()):
        print(describe_controller(settings, local=True), file=sys.stderr)
    try:
        prepare_controller(settings, local=local)
    except LLMNotConfiguredError as exc:
        error(command, str(exc))
        return False
    return True


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def add_inputs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--input",
        "-i",
        dest="inputs",
        action="append",
        default=[],
        metavar="PATH",
        help="a file the request refers to (path, http(s) or fsspec URL); repeatable",
    )


def add_storage(parser: argparse.ArgumentParser, help: str = "artifact store: a folder or fsspec URL") -> None:
    parser.add_argument("--storage", metavar="URL", help=f"{help} (HUGGINGGPT_STORAGE)")


def add_catalog(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--catalog", metavar="PATH", help="extra catalog JSONL (HUGGINGGPT_CATALOG)")


def add_llm_model(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--llm-model", metavar="NAME", help="chat model of the controller (HUGGINGGPT_LLM_MODEL)")


def add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", metavar="DEVICE", help="cpu, cuda, cuda:1, mps or auto (HUGGINGGPT_DEVICE)")


def add_output_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print only the run summary as JSON on stdout")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr, only the result")


def progress_mode(args: argparse.Namespace) -> str:
    """``quiet`` (--quiet), ``live`` (a terminal, without --json) or ``plain`` (one line per change)."""
    if getattr(args, "quiet", False):
        return "quiet"
    return "live" if not args.json and sys.stderr.isatty() else "plain"


def dump_json(document: Any) -> str:
    """JSON for stdout: every control character escaped, so none reaches a terminal."""
    from flows.progress import escape_json_text

    return escape_json_text(json.dumps(document, indent=2, ensure_ascii=False))
