"""The command line parsed once into a frozen, typed run configuration.

The configuration's fields are the parser's options, named as their flags (``--lr`` ->
``lr``, ``--start_from_scratch`` -> ``start_from_scratch``), typed by the parser's
converters, with the parser's defaults. It cannot change after parsing (a fold of a
cross-validation is ``config.replace(model_dir=...)``), and ``to_dict()`` stores it whole
as plain data (model file, ``metrics.json``): a new flag is recorded without anyone
copying it by hand.
"""

import argparse
import dataclasses
from typing import Any, Dict, List, Optional, Sequence


def flag_name(action: argparse.Action) -> str:
    """The option's first long flag without dashes (``--lr`` for ``--lr/--learning_rate``)."""
    long = [s for s in action.option_strings if s.startswith("--")]
    return (long or action.option_strings)[0].lstrip("-")


def _frozen(value):
    return tuple(_frozen(v) for v in value) if isinstance(value, (list, tuple)) else value


def _plain(value):
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def _annotation(action: argparse.Action):
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        return bool
    kind = action.type if action.type in (int, float, str) else Any
    if action.nargs not in (None, "?"):
        return tuple
    return Optional[kind] if action.default is None else kind


class ConfigBase:
    """Methods shared by every configuration class."""

    def to_dict(self) -> Dict[str, Any]:
        """Every option by its flag name, as plain data (tuples become lists)."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


def config_class(parser: argparse.ArgumentParser, name: str = "RunConfig") -> type:
    """A frozen dataclass with one field per option of ``parser``. Every option's
    ``dest`` must be its flag name (checked here, so stored options read as flags)."""
    fields: List = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or not action.option_strings:
            continue
        if action.dest != flag_name(action):
            raise ValueError(f"option {action.option_strings[0]} stores as {action.dest!r}; "
                             f"give it dest={flag_name(action)!r}")
        fields.append((action.dest, _annotation(action), dataclasses.field(default=_frozen(action.default))))
    return dataclasses.make_dataclass(name, fields, bases=(ConfigBase,), frozen=True)


def parse(parser: argparse.ArgumentParser, cls: type, argv: Optional[Sequence[str]] = None):
    """The command line (``argv``, else ``sys.argv``) as a ``cls`` instance."""
    namespace = parser.parse_args(argv)
    return cls(**{key: _frozen(value) for key, value in vars(namespace).items()})
