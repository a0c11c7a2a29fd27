"""What the entry points share: flag parsing and errors a user can fix, printed as one line.

`run(main)` replaces `absl.app.run(main)`. A mistake on the command line (a config file that does
not exist, a misspelled `--config.key`, a value of the wrong type) or a `TrainingError` raised
by the run (an invalid config, an unusable workdir or checkpoint) ends the process with

    error: <what is wrong>; <how to fix it>

on stderr and exit status 2 (command line) or 1 (the run), without a traceback. `--debug`, or
the environment variable CONTRASTIVE_JAX_DEBUG=1, prints the traceback too. Any other
exception is a bug and keeps its traceback. The library reports progress through the
`contrastive_jax` logger; `run` shows it as plain lines (`show_library_logs`).
"""

from __future__ import annotations

import difflib
import importlib.util
import logging
import os
import re
import sys
import traceback

from absl import app, flags
from ml_collections import ConfigDict, config_flags

from contrastive_jax.train import TrainingError, quiet_logs

DEBUG_ENV = "CONTRASTIVE_JAX_DEBUG"
_DEBUG = flags.DEFINE_bool("debug", False, f"Show the traceback of an error (or set {DEBUG_ENV}=1).")


# Config-file flags defined with `define_config_file`: name → default path.
_CONFIG_FILES: dict[str, str] = {}


class CommandLineError(Exception):
    """A flag the command line got wrong (exit status 2)."""


def define_config_file(name: str, default: str, help_string: str):
    """`config_flags.DEFINE_config_file`, with its default applied at parse time.

    config_flags parses a default config while the flag is being defined, at import, and raises
    there on a misspelled `--name.key` override; `parse_flags` passes the default instead.
    """
    _CONFIG_FILES[name] = default
    return config_flags.DEFINE_config_file(name, None, f"{help_string} (default: {default})")


def debug_requested(argv) -> bool:
    """`--debug` on the command line (looked for before the flags parse: they may fail) or the env var."""
    if os.environ.get(DEBUG_ENV, "").lower() in ("1", "true", "yes"):
        return True
    return any(arg in ("--debug", "-debug", "--debug=true", "--debug=1", "--debug=True") for arg in argv)


def one_line(message: str) -> str:
    return " ".join(str(message).split())


def _flag_argument(argv, name: str) -> str | None:
    """The value given to `--name` on the command line (last one wins, as in absl), or None."""
    value = None
    for i, arg in enumerate(argv):
        for prefix in (f"--{name}=", f"-{name}="):
            if arg.startswith(prefix):
                value = arg[len(prefix) :]
        if arg in (f"--{name}", f"-{name}") and i + 1 < len(argv):
            value = argv[i + 1]
    return value


def _config_path(argv, name: str) -> str:
    given = _flag_argument(argv, name)
    return given if given is not None else _CONFIG_FILES[name]


def _is_config_file(path: str) -> bool:
    if not path.endswith(".py") or not os.path.isfile(path):
        return False
    with open(path, encoding="utf-8", errors="replace") as f:
        return "def get_config(" in f.read()


def _check_config_file(argv, name: str) -> None:
    """The config file must exist: else config_flags defers the error to the first use of the config."""
    path = _config_path(argv, name).split(":", 1)[0]
    if os.path.isfile(path):
        return
    folder = os.path.dirname(path) or "."
    siblings = (
        sorted(f for f in os.listdir(folder) if _is_config_file(os.path.join(folder, f)))
        if os.path.isdir(folder)
        else []
    )
    close = difflib.get_close_matches(os.path.basename(path), siblings, n=1)
    if close:
        fix = f"did you mean --{name}={os.path.join(folder, close[0])}?"
    elif siblings:
        fix = f"choose one of {', '.join(os.path.join(folder, f) for f in siblings)}"
    else:
        fix = f"pass the path of a config file, e.g. --{name}=experiments/configs/clip.py"
    raise CommandLineError(f"config file {path} not found (from {os.getcwd()}); {fix}")


def _load_config(argv, name: str):
    """The config file's `get_config()` result, or a CommandLineError with the reason it failed."""
    path, _, argument = _config_path(argv, name).partition(":")
    try:
        spec = importlib.util.spec_from_file_location(f"_{name}_file", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.get_config(argument) if argument else module.get_config()
    except Exception as err:  # noqa: BLE001 - whatever the file raises is the file's problem
        raise CommandLineError(
            f"config file {path} failed to load: {type(err).__name__}: {one_line(err)}"
        ) from err


def _dotted_keys(config, prefix: str = "") -> list[str]:
    keys = []
    for key, value in config.items():
        keys.append(prefix + key)
        if isinstance(value, ConfigDict):
            keys.extend(_dotted_keys(value, f"{prefix}{key}."))
    return keys


def _suggestions(config, node, parts: list[str], i: int) -> list[str]:
    """Paths the user may have meant when `parts[i]` is not a field of `node` (reached by `parts[:i]`)."""
    rest = ".".join(parts[i:])
    moved = [k for k in _dotted_keys(config) if k == rest or k.endswith("." + rest)]  # another section
    if moved:
        return moved
    close = difflib.get_close_matches(parts[i], list(node.keys()), n=3, cutoff=0.6)
    return [".".join([*parts[:i], match, *parts[i + 1 :]]) for match in close]


def _unknown_override(config, name: str, path: str) -> str | None:
    """Why `--name.path` names no field of `config` (with the close matches), or None if it does."""
    node, walked, parts = config, name, path.split(".")
    for i, part in enumerate(parts):
        if not isinstance(node, ConfigDict):
            return (
                f"--{name}.{path}: {walked} is a value ({node!r}), not a section with fields; set --{walked}"
            )
        if part not in node:
            suggestions = _suggestions(config, node, parts, i)
            if suggestions:
                fix = "did you mean " + " or ".join(f"--{name}.{s}" for s in suggestions) + "?"
            else:
                fix = f"{walked} has the fields {', '.join(sorted(node.keys()))}"
            return f"unknown config key --{name}.{path} ({walked} has no field {part!r}); {fix}"
        node, walked = node[part], f"{walked}.{part}"
    return None


def _overrides(argv, name: str) -> list[str]:
    """The dotted paths of the `--name.a.b[=v]` / `--noname.a.b` overrides in argv."""
    paths = []
    for arg in argv:
        flag = arg.lstrip("-").split("=", 1)[0]
        for head in (f"{name}.", f"no{name}."):
            if arg.startswith("-") and flag.startswith(head):
                paths.append(flag[len(head) :])
    return paths


def _explain_flag_error(err: Exception, argv) -> str:
    """The one-line reason a command line failed to parse."""
    for name in _CONFIG_FILES:
        config = _load_config(argv, name)
        for path in _overrides(argv, name):
            problem = _unknown_override(config, name, path)
            if problem:
                return problem
    message = str(err) if isinstance(err, flags.Error) else f"{type(err).__name__}: {err}"
    required = re.search(r"Flag --(\w+) must have a value other than None", message)
    if required:
        return f"--{required.group(1)} is required; pass --{required.group(1)}=..."
    return f"{one_line(message)} (see --helpfull for the flags)"


def parse_flags(argv) -> list[str]:
    """`absl.flags.FLAGS(argv)`, with every mistake raised as a one-line `CommandLineError`."""
    argv = list(argv)
    for name, default in _CONFIG_FILES.items():
        if _flag_argument(argv, name) is None:
            argv.insert(1, f"--{name}={default}")
        _check_config_file(argv, name)
    try:
        remaining = flags.FLAGS(argv)
    except Exception as err:  # noqa: BLE001 - config_flags raises KeyError/AttributeError/IOError too
        raise CommandLineError(_explain_flag_error(err, argv)) from err
    for name in _CONFIG_FILES:
        if not isinstance(flags.FLAGS[name].value, ConfigDict):
            _load_config(argv, name)  # raises with the reason
    if len(remaining) > 1:
        raise CommandLineError(
            f"unexpected arguments {' '.join(remaining[1:])}; flags are written --name=value"
        )
    return remaining


class _BelowWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.WARNING


def show_library_logs() -> None:
    """Shows the library's log lines as plain lines: progress (INFO: "Resumed from step ...", the
    model summary, "Stopped at step ...") on stdout, warnings (a damaged checkpoint skipped) on
    stderr. Calling it again changes nothing."""
    logger = logging.getLogger("contrastive_jax")
    if any(getattr(handler, "_contrastive_jax_console", False) for handler in logger.handlers):
        return
    progress, problems = logging.StreamHandler(sys.stdout), logging.StreamHandler(sys.stderr)
    progress.addFilter(_BelowWarning())
    problems.setLevel(logging.WARNING)
    for handler in (progress, problems):
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._contrastive_jax_console = True
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # absl's root handler would print each line again, with its prefix


def run(main) -> None:
    """`absl.app.run(main)` that reports command-line and `TrainingError` mistakes as one line."""
    debug = debug_requested(sys.argv)

    def quiet_main(argv):
        quiet_logs()  # after parsing: absl sets its verbosity to INFO once the flags are parsed
        show_library_logs()
        return main(argv)

    try:
        app.run(quiet_main, flags_parser=parse_flags)
    except (CommandLineError, TrainingError) as err:
        if debug:
            traceback.print_exc()
        print(f"error: {one_line(err)}", file=sys.stderr, flush=True)
        sys.exit(2 if isinstance(err, CommandLineError) else 1)
