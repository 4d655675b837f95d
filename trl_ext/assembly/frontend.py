"""What both command-line front-ends (``trl-ext COMMAND`` and ``trl-ext pipeline``) share: the parser, one-line
errors with exit codes, and unknown options restated with the closest known one."""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import importlib
import json
import os
import re
import sys

from trl import TrlParser


def _public_name(cls) -> str:
    """``trl.GRPOConfig`` rather than ``trl.trainer.grpo_config.GRPOConfig`` when the package exports it."""
    package = cls.__module__.split(".")[0]
    exported = getattr(importlib.import_module(package), cls.__name__, None) is cls
    return f"{package if exported else cls.__module__}.{cls.__name__}"


def _nested_fields(dtype) -> dict[str, type]:
    """The fields of ``dtype`` that hold a dataclass (``PipelineConfig.embedded``), by name."""
    import typing

    hints = typing.get_type_hints(dtype)
    return {f.name: hints[f.name] for f in dataclasses.fields(dtype)
            if f.init and isinstance(hints[f.name], type) and dataclasses.is_dataclass(hints[f.name])}


class _MergedSection(argparse._StoreAction):
    """A JSON object given on the command line for a map field (``--rl '{"max_steps": 2}'``), merged over the map
    the YAML file gives that field: the fields named on the command line win, the YAML's others stay. (TrlParser
    alone would replace the whole map with the flag's value.) A value that is not a JSON object is stored as given,
    for the config's own check to name it."""

    def __call__(self, parser, namespace, values, option_string=None):
        base = getattr(namespace, self.dest, None)
        if isinstance(base, str):  # an earlier flag's JSON
            base = _json_object(base)
        given = _json_object(values)
        if isinstance(base, dict) and given is not None:
            values = {**base, **given}
        setattr(namespace, self.dest, values)


def _json_object(text: str) -> dict | None:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


class CommandParser(TrlParser):
    """``TrlParser`` whose ``--help`` starts with the command's description and example, then one flag group per
    dataclass (TRL's own scripts list all flags in one group).

    A field that holds a dataclass (``PipelineConfig.embedded``) is given by that dataclass's own flags, flat: they
    are parsed as one more dataclass and nested into the field, so a YAML file or the command line writes
    ``embedded_task: graded``, not a nested map.

    The map fields a dataclass names in ``MERGED_SECTIONS`` (``PipelineConfig``'s ``sft``, ``rm``, ``rl``) merge a
    command line's JSON over the YAML's map (:class:`_MergedSection`) instead of replacing it.
    """

    def __init__(self, dataclass_types, *, intro: str = "", **kwargs):
        self._intro = intro.strip()
        self._outer = list(dataclass_types)
        self._nested = {dtype: _nested_fields(dtype) for dtype in self._outer}
        kwargs.setdefault("usage", f"{kwargs.get('prog', '%(prog)s')} [--config FILE.yaml] [--option VALUE ...]")
        expanded = [t for dtype in self._outer for t in (dtype, *self._nested[dtype].values())]
        super().__init__(expanded, **kwargs)

    def _add_dataclass_arguments(self, dtype):
        start = len(self._actions)
        super()._add_dataclass_arguments(dtype)
        group = self.add_argument_group(f"{dtype.__name__} ({_public_name(dtype)})")
        merged = getattr(dtype, "MERGED_SECTIONS", ())
        for action in self._actions[start:]:
            self._optionals._group_actions.remove(action)
            group._group_actions.append(action)
            if action.dest in merged:
                action.__class__ = _MergedSection

    @staticmethod
    def _parse_dataclass_field(parser, field):
        if isinstance(field.type, type) and dataclasses.is_dataclass(field.type):
            # no flag: its own fields are the flags (see the class docstring); the default stands in until _nest
            parser.set_defaults(**{field.name: field.default_factory()})
            return
        TrlParser._parse_dataclass_field(parser, field)

    def _nest(self, parsed: tuple) -> tuple:
        """The parsed dataclasses, each nested one put into its outer dataclass's field."""
        parsed = list(parsed)
        objects, rest = parsed[: len(self.dataclass_types)], parsed[len(self.dataclass_types):]
        it, out = iter(objects), []
        for dtype in self._outer:
            obj = next(it)
            nested = {name: next(it) for name in self._nested[dtype]}
            out.append(dataclasses.replace(obj, **nested) if nested else obj)
        return (*out, *rest)

    def parse_args_into_dataclasses(self, *args, **kwargs):
        return self._nest(super().parse_args_into_dataclasses(*args, **kwargs))

    def parse_dict(self, *args, **kwargs):
        return self._nest(super().parse_dict(*args, **kwargs))

    def format_help(self) -> str:
        config = "--config FILE.yaml sets any of the options below by name (TRL's TrlParser); flags given here win."
        return f"{self._intro}\n\n{config}\n\n{super().format_help()}"

    def option_names(self) -> list[str]:
        """Every option's name (for :func:`explain_parse_error`); a nested dataclass's field is no option itself."""
        nested = {name for names in self._nested.values() for name in names}
        return [f.name for dc in self.dataclass_types for f in dataclasses.fields(dc) if f.name not in nested]


def explain_parse_error(message: str, known: list[str], command: str = "pipeline") -> str:
    """TrlParser's "unknown arguments" errors, restated with the closest known option for each unknown one."""
    where = "in the config file" if "config file" in message else "on the command line"
    if "Unknown arguments" not in message and "not used by the HfArgumentParser" not in message:
        return message
    unknown = re.findall(r"'--([\w.-]+)'", message)
    hints = []
    for name in unknown:
        close = difflib.get_close_matches(name, known, n=1)
        hints.append(f"{name!r}: did you mean {close[0]!r}?" if close else f"{name!r}: no such option.")
    return f"unknown option(s) {where}: " + " ".join(hints) + f" `trl-ext {command} --help` lists every option."


def fail(command: str, message: str, code: int) -> int:
    """One line on stderr, ``trl-ext COMMAND: error: MESSAGE`` (a message's line breaks become spaces); the
    traceback only with TRL_EXT_DEBUG=1."""
    message = " ".join(line.strip() for line in str(message).splitlines() if line.strip()) or "(no message)"
    print(f"trl-ext {command}: error: {message}", file=sys.stderr)
    print("(set TRL_EXT_DEBUG=1 to see the traceback)", file=sys.stderr)
    return code


def run_command(name: str, parser: CommandParser, main, argv: list[str]) -> int:
    """Parse ``argv`` and call ``main(*parsed)``: bad input (ValueError, FileNotFoundError, TypeError from a config)
    is one line and exit code 2; a RuntimeError during training is one line and exit code 1."""
    debug = bool(os.environ.get("TRL_EXT_DEBUG"))
    try:
        parsed = parser.parse_args_and_config(argv)
    except (ValueError, TypeError, FileNotFoundError) as e:  # unknown flags, a config's own validation, a bad --config
        if debug:
            raise
        return fail(name, explain_parse_error(str(e), parser.option_names(), name), 2)
    try:
        main(*parsed)
    except (ValueError, FileNotFoundError) as e:
        if debug:
            raise
        return fail(name, str(e), 2)
    except RuntimeError as e:
        if debug:
            raise
        return fail(name, str(e) or type(e).__name__, 1)
    return 0
