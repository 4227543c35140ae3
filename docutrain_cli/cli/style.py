"""The command line's conventions: help screens as Click users read them;
every error one `docutrain: error: ...` line with its exit code (Click's
usage errors included); a closed stdout ends quietly; root options are
accepted after the command name too.

Typer 0.29's rich help prints a value placeholder for every parameter,
flags included (`--json <bool>`, `--help -h <bool>`), arguments as their
Python types (`<list[str]>`) and required arguments in braces in the usage
line (`{query}`). Typer builds each parameter itself and has no per-parameter
class hook, but commands and groups take a `cls`: `HelpCommand` and
`HelpGroup` give their parameters the classes below, which show flags bare,
a value option with its metavar (`--workers N`) and an argument by its
metavar (`PATH...`, `JOB_ID...`, `QUESTION`). tests/test_cli.py walks every
help screen for placeholders, so a typer upgrade that changes this is caught.
The same classes skip typer's pydantic coercion where it would change
nothing (`_NoValueFirst`; tests/test_cli_imports.py).
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
from typing import Callable, Optional

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from docutrain_cli.errors import DocutrainError, ExitCode

_PLAIN = {t: plain for plain in (int, float, str) for t in (plain, Optional[plain])}
# Click's names for values whose option declares no metavar.
_TYPE_NAMES = {"str": "TEXT", "int": "INTEGER", "float": "FLOAT", "Path": "PATH"}


class _NoValueFirst:
    """Typer 0.29 coerces every parameter's value through a pydantic
    TypeAdapter, made the first time the parameter is processed, even when
    it has no value (an option not given), which typer's coercion answers
    with None (or () when it takes many) without the adapter. Making one
    imports pydantic: 0.1-0.2 s of a cron `run --drain` that gives no
    option a value. So no value is answered here, as typer's coercion
    would, and so are the values it would return unchanged or plainly
    converted: for an int, float or str parameter with no bounds, a value
    of that type (a default) or a whole number given as digits
    (`--workers 24`). Anything else goes to typer's own coercion, adapter,
    checks and messages."""

    def __init__(self, typers) -> None:
        self._typers = typers  # typer's own get_runtime_param, bound to the parameter

    def coerce(self, value, param, ctx):
        if value is None:
            return () if param.multiple or param.nargs == -1 else None
        plain = _plain_type(param)
        if plain is not None and type(value) is plain:
            return value
        if plain is int and type(value) is str and value.isascii() and value.isdigit():
            return int(value)
        return self._typers().coerce(value, param=param, ctx=ctx)  # made once, kept by typer


def _plain_type(param) -> type | None:
    """int, float or str when that (or Optional of it) is the parameter's type and it has no bounds."""
    info = param.type_descriptor.parameter_info
    if info.min is not None or info.max is not None:
        return None
    return _PLAIN.get(param.type_descriptor.annotation)


class _Option(TyperOption):
    def get_runtime_param(self):
        return _NoValueFirst(super().get_runtime_param)

    def display_type_rich(self, ctx):
        if self.is_flag or self.count:
            return None  # a flag takes no value: show none
        return self.metavar or _TYPE_NAMES.get(self.bare_type(), self.bare_type().upper())


class _Argument(TyperArgument):
    def get_runtime_param(self):
        return _NoValueFirst(super().get_runtime_param)

    @property
    def display_name_raw(self) -> str:
        name = self.metavar or self.name.upper()
        return name + "..." if self.nargs != 1 else name

    def display_type_rich(self, ctx):
        return None  # the name says it (QUESTION); a type column would repeat it

    def _usage_display_name(self) -> str:
        name = self.metavar or self.name.upper()
        if not self.required:
            name = f"[{name}]"
        return name + "..." if self.nargs != 1 else name


_RESTYLED = {TyperOption: _Option, TyperArgument: _Argument}


def _restyle(param):
    # The subclasses add no state, only how help shows the parameter, so
    # switching the class of typer's own objects is safe.
    if param is not None and type(param) in _RESTYLED:
        param.__class__ = _RESTYLED[type(param)]
    return param


class StdoutClosed(Exception):
    """Whoever read our stdout went away (`docutrain schema | head`)."""


def _stdout_closed() -> bool:
    # A pipe whose reader is gone polls as POLLERR; a file or terminal does not.
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return False


class _Restyled:
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for param in self.params:
            _restyle(param)

    def get_help_option(self, ctx):
        return _restyle(super().get_help_option(ctx))

    def invoke(self, ctx):
        # Click turns every broken pipe into a silent exit 1, even one from a
        # network socket. Only a closed stdout is quiet here (run_app).
        try:
            return super().invoke(ctx)
        except BrokenPipeError as exc:
            if _stdout_closed():
                raise StdoutClosed() from exc
            raise RuntimeError(f"broken pipe: {exc}") from exc


class HelpCommand(_Restyled, TyperCommand):
    """A typer command whose help shows flags and arguments Click's way."""


class HelpGroup(_Restyled, TyperGroup):
    """A typer group whose help shows flags and arguments Click's way."""


# -- usage errors --------------------------------------------------------------
_PYDANTIC_WORDS = {
    "int_parsing": "expected a whole number",
    "int_from_float": "expected a whole number",
    "float_parsing": "expected a number",
    "bool_parsing": "expected true or false",
}


def see_help(ctx) -> str:
    """Where a usage error points: ` (see `docutrain run --help`)`."""
    return f" (see `{ctx.command_path} --help`)" if ctx is not None else ""


def usage_error_line(exc) -> str:
    """One line for a Click usage error (bad value, missing argument, unknown
    option or command), naming the parameter and where help is."""
    from typer import BadParameter

    ctx = getattr(exc, "ctx", None)
    where = see_help(ctx)
    param = getattr(exc, "param", None)
    missing = hasattr(exc, "param_type")  # MissingParameter: "Missing argument 'QUESTION'"
    if isinstance(exc, BadParameter) and not missing and param is not None:
        name = param.opts[0] if getattr(param, "opts", None) and param.param_type_name == "option" else param.display_name_raw
        return f"{name}: {_value_problem(exc)}{where}"
    if type(exc).__name__ == "NoSuchOption" and ctx is not None:
        belongs = _option_of_a_command(ctx, exc.option_name)
        if belongs:
            return f"no such option: {exc.option_name} (it belongs after the command: `{belongs}`)"
    message = exc.format_message().strip()
    if message == "Missing command.":
        message = "give a command, e.g. `docutrain status`"
    message = message.rstrip(".")
    return message[:1].lower() + message[1:] + where


def _option_of_a_command(ctx, option: str) -> str | None:
    """`docutrain run --workers N` when `option`, given before the command
    (`docutrain --workers 2 run`), is an option of the command typed after it
    (or, with none typed, of one of the group's commands)."""
    commands = getattr(ctx.command, "commands", {})
    typed = [arg for arg in sys.argv[1:] if arg in commands][:1]
    for name in typed or sorted(commands):
        for param in commands[name].params:
            if option in getattr(param, "opts", ()) and param.param_type_name == "option":
                value = "" if param.is_flag else f" {param.metavar or 'VALUE'}"
                return f"{ctx.command_path} {name} {option}{value}"
    return None


def _value_problem(exc) -> str:
    cause = exc.__cause__
    errors = cause.errors() if cause is not None and hasattr(cause, "errors") else []
    if errors and errors[0].get("type") in _PYDANTIC_WORDS:
        return f"{_PYDANTIC_WORDS[errors[0]['type']]}, got {errors[0].get('input')!r}"
    message = exc.message.strip().rstrip(".")
    return message[:1].lower() + message[1:]


# -- options after the command ------------------------------------------------
def also_after_the_command(command, options: dict[str, tuple[str, str, str]]):
    """Accept root options after the command name too, as people type them
    (`docutrain status --queue other.db`); they override the ones given
    before it. `options`: root key -> (flag, metavar, help)."""
    # Annotations evaluated in the command's module, as typer does: an
    # Annotated option type (cli/app.py's JsonOption) keeps its typer.Option.
    signature = inspect.signature(command, eval_str=True)
    extra = [
        inspect.Parameter(
            f"{key}_after", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[str],
            default=typer.Option(None, flag, metavar=metavar, help=text, show_default=False),
        )
        for key, (flag, metavar, text) in options.items()
    ]

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        given = {key: kwargs.pop(f"{key}_after", None) for key in options}
        ctx = kwargs.get("ctx") or next(a for a in args if isinstance(a, typer.Context))
        root = ctx.find_root()
        root.obj = dict(root.obj or {})
        root.obj.update({key: value for key, value in given.items() if value})
        return command(*args, **kwargs)

    wrapper.__signature__ = signature.replace(parameters=[*signature.parameters.values(), *extra])
    # The type itself, not the string "Optional[str]": typer resolves string
    # annotations in the command's module, which need not import Optional.
    wrapper.__annotations__ = {**command.__annotations__, **{p.name: Optional[str] for p in extra}}
    return wrapper


# -- running the app -------------------------------------------------------------
def run_app(app: typer.Typer, error_line: Callable[[str], None], traceback_wanted: Callable[[], bool]) -> int:
    """Run the command and return its exit code. A closed stdout
    (`docutrain schema | head`) ends quietly with 141, the status Unix tools
    killed by SIGPIPE report; `run` under cron never dies of SIGPIPE."""
    try:
        code = _run(app, error_line, traceback_wanted)
        sys.stdout.flush()  # here, not at interpreter exit, so a closed pipe is caught
    except (StdoutClosed, BrokenPipeError):
        # Python's recipe: point stdout at /dev/null so the final flush at
        # exit cannot fail again and print "Exception ignored".
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = ExitCode.PIPE_CLOSED
    return int(code)


def _run(app: typer.Typer, error_line: Callable[[str], None], traceback_wanted: Callable[[], bool]) -> int:
    try:
        # Without standalone mode, Click returns the code of typer.Exit.
        code = app(standalone_mode=False, prog_name="docutrain")
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        return ExitCode.INTERRUPTED
    except typer.TyperException as exc:  # bad flags or arguments: one line, like every error
        if type(exc).__name__ == "NoArgsIsHelpError":  # a bare group: its help
            exc.show()
        else:
            error_line(usage_error_line(exc))
        return getattr(exc, "exit_code", ExitCode.USAGE)
    except DocutrainError as exc:
        if traceback_wanted():
            raise
        error_line(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED
    except StdoutClosed:
        raise
    except Exception as exc:  # noqa: BLE001 - last resort: one line, not a traceback
        if traceback_wanted():
            raise
        error_line(f"unexpected {type(exc).__name__}: {exc} (run with --traceback for details)")
        return ExitCode.ERROR
    return code if isinstance(code, int) else ExitCode.OK
