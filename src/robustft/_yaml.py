"""Reading YAML robustft is given (config files, ``--set`` values, a run's own ``config.yaml``): safe tags only, no
aliases (a few hundred bytes of nested ``&a``/``*a`` expand to gigabytes as values are checked), no duplicate keys
(``{lr: 0.01, lr: 50}`` would silently take the last), UTF-8 only; every failure is one line."""

from pathlib import Path
from typing import Any

import yaml

from .errors import UserError, shown

__all__ = ["load_yaml", "read_yaml", "yaml_problem"]


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses aliases and duplicate mapping keys."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        """Refuse an alias (``*name``) where PyYAML would reuse its anchor's node."""
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, f"aliases (*{event.anchor}) are not supported; write the "
                                              f"value out", event.start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> dict:
        """A mapping, refusing a key given twice."""
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                    seen.add(key)
                except TypeError:  # an unhashable key: PyYAML's own error says so below
                    continue
                if duplicate:
                    raise yaml.constructor.ConstructorError(None, None, f"duplicate key {shown(key)}",
                                                            key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def yaml_problem(err: yaml.YAMLError) -> str:
    """A YAML error as one line: what is wrong and where (PyYAML's own message spans several lines)."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    context = getattr(err, "context", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{problem}{where}" + (f" ({context})" if context else "")


def load_yaml(text: str, error: str) -> Any:
    """Parse ``text`` strictly (see the module docstring); a failure is the UserError ``{error}: {what is wrong}``."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as e:
        raise UserError(f"{error}: {yaml_problem(e)}") from None


def read_yaml(path: str | Path, what: str) -> Any:
    """``load_yaml`` of the UTF-8 file ``path`` (``what`` names it: ``config file x.yaml``); a file that cannot be
    read or is not UTF-8 is one line too."""
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{what} is not UTF-8 text (byte {e.start}: {e.reason}); save it as UTF-8") from None
    except OSError as e:
        raise UserError(f"cannot read {what}: {e.strerror}") from None
    return load_yaml(text, f"{what} is not valid YAML")
