"""YAML from users, parsed with bounded work: libyaml's safe loader where present, duplicate keys refused.

Before anything is built, one pass over the parser's events (no recursion, linear in the text) bounds the
nesting depth and the number of nodes the document expands to, counting every alias as the size of what it
names: an alias bomb ("billion laughs") or 20,000 nested brackets is refused in milliseconds, not after
minutes and gigabytes. A key given twice in one mapping is refused (YAML loaders keep the last silently).
"""

from __future__ import annotations

import yaml

MAX_DEPTH = 32  # a card's deepest legitimate path is ~6 levels
MAX_NODES = 200_000  # expanded nodes: a 4096-row table of 16 columns is ~70k
MAX_BYTES = 4 << 20

_Base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class YamlProblem(ValueError):
    """What is wrong with a YAML text, in one line."""


class _UniqueKeyLoader(_Base):
    line_offset = 0

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node)
            except TypeError:  # an unhashable key: the base constructor says so
                break
            if first is not key_node:
                at = self.line_offset + 1
                raise YamlProblem(f"key '{str(key)[:80]}' is given twice in one mapping (lines {first.start_mark.line + at} and "
                                  f"{key_node.start_mark.line + at}); give each key once")
        return super().construct_mapping(node, deep)


def _check_bounds(text: str, line_offset: int) -> None:
    if len(text) > MAX_BYTES:
        raise YamlProblem(f"{len(text)} characters, at most {MAX_BYTES} are read")
    depth = expanded = 0
    sizes: dict[str, int] = {}
    open_: list[tuple[str | None, int]] = []
    for ev in yaml.parse(text, Loader=_Base):
        if isinstance(ev, yaml.AliasEvent):
            expanded += sizes.get(ev.anchor, 1)
        elif isinstance(ev, yaml.ScalarEvent):
            expanded += 1
            if ev.anchor:
                sizes[ev.anchor] = 1
        elif isinstance(ev, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            expanded += 1
            depth += 1
            open_.append((ev.anchor, expanded - 1))
            if depth > MAX_DEPTH:
                raise YamlProblem(f"nested deeper than {MAX_DEPTH} levels at line {ev.start_mark.line + 1 + line_offset}")
        elif isinstance(ev, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            depth -= 1
            anchor, start = open_.pop()
            if anchor:
                sizes[anchor] = expanded - start
        if expanded > MAX_NODES:
            raise YamlProblem(f"expands to more than {MAX_NODES} values (aliases counted as what they repeat) by line "
                              f"{ev.start_mark.line + 1 + line_offset}")


def safe_load(text: str, line_offset: int = 0):
    """The YAML document in `text` as plain Python values; YamlProblem (one line) if it is malformed or too big.
    `line_offset`: lines before `text` in its file, so that line numbers are the file's."""
    loader = type("Loader", (_UniqueKeyLoader,), {"line_offset": line_offset})
    try:
        _check_bounds(text, line_offset)
        return yaml.load(text, Loader=loader)  # noqa: S506  (a SafeLoader subclass)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1 + line_offset}" if mark is not None else ""
        raise YamlProblem(f"invalid YAML{at}: {getattr(e, 'problem', None) or str(e).splitlines()[0]}") from None
