"""Load and validate a data card: structure with pydantic, then meaning against the unified action space.

Every problem becomes one line, `<file>: <field path>: <what was expected>`, collected into a CardError.
Nothing named in a card is ever imported or executed here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from unified_action import action_space
from unified_action.action_space import SlotKind
from unified_action.cards import schema
from unified_action.cards.mapping import ActionMapping, compile_mapping, per_dim
from unified_action.cards.schema import FLAT_KEYS, ActionField, ActionPart, CardHeader
from unified_action.errors import CardError, did_you_mean, pydantic_lines
from unified_action.safe_yaml import YamlProblem, safe_load


@dataclass(frozen=True)
class DataCard:
    header: CardHeader
    body: str
    text: str  # the whole file, as read: it travels with the tokenizer
    source_path: Path | None
    mapping: ActionMapping
    where: str = "<card>"  # how its errors name the card: the file it was read from, or what the caller said

    @property
    def name(self) -> str:
        return self.header.name

    @property
    def embodiment(self) -> str:
        return self.header.embodiment

    @property
    def content_hash(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()


def load_card(path: str | Path) -> DataCard:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CardError([f"{path}: file not found"]) from None
    except (OSError, UnicodeDecodeError) as e:
        raise CardError([f"{path}: cannot be read as UTF-8 text ({e.__class__.__name__})"]) from None
    card = parse_card(text, str(path))
    if card.name != path.stem:
        raise CardError([f"{path}: name: '{card.name}' must equal the file name '{path.stem}' (data_cards/<name>.md)"])
    return DataCard(card.header, card.body, text, path, card.mapping, str(path))


def parse_card(text: str, where: str = "<card>") -> DataCard:
    header, body = _split_front_matter(text, where)
    try:
        model = CardHeader.model_validate(header)
    except ValidationError as e:
        raise CardError(pydantic_lines(e, where, _known_keys())) from None
    problems = [f"{where}: {p}" for p in check_semantics(model)]
    if problems:
        raise CardError(problems)
    return DataCard(model, body, text, None, compile_mapping(model.action, model.action_space_version, _agent_fields(model)), where)


def _agent_fields(header: CardHeader) -> tuple[tuple[str, int], ...]:
    """(agent, how many of the card's action fields it has) in order; () for a card of one agent."""
    return tuple((a.name, len(a.action)) for a in header.agents) if header.agents else ()


def _split_front_matter(text: str, where: str) -> tuple[dict, str]:
    lines = text.splitlines()
    if not lines or lines[0].strip() != "---":
        raise CardError([f"{where}: header: expected a YAML header opened by a '---' first line"])
    try:
        end = next(i for i in range(1, len(lines)) if lines[i].strip() == "---")
    except StopIteration:
        raise CardError([f"{where}: header: expected a closing '---' line after the YAML header"]) from None
    try:
        header = safe_load("\n".join(lines[1:end]), line_offset=1)
    except YamlProblem as e:
        raise CardError([f"{where}: header: {e}"]) from None
    if not isinstance(header, dict):
        raise CardError([f"{where}: header: expected a YAML mapping of fields, got {type(header).__name__}"])
    return header, "\n".join(lines[end + 1:]).strip() + "\n"


def _known_keys() -> set[str]:
    keys: set[str] = set()
    for model in (schema.CardHeader, schema.Agent, schema.Region, schema.PettingZooSource, schema.ActionField, schema.ActionPart, schema.Camera, schema.TokenizerParams,
                  schema.Instruction, schema.Range, schema.Table, schema.Affine):
        keys.update(model.model_fields)
    return keys


# ------------------------------------------------------------------------------------------------
# Meaning: everything a schema cannot say. Each check returns 'field path: message' lines.
# ------------------------------------------------------------------------------------------------


def check_semantics(card: CardHeader) -> list[str]:
    """Problems of the card's meaning; the tokenizer section is checked by its kind (tokenization/kinds/)."""
    version = card.action_space_version
    if version not in action_space.SLOT_COUNT_BY_VERSION:
        return [f"action_space_version: unknown version {version}, known: {sorted(action_space.SLOT_COUNT_BY_VERSION)}"]
    table = {s.name: s for s in action_space.slots(version)}
    problems: list[str] = []
    first_use: dict[tuple[str, str], str] = {}  # (agent, slot): agents share slots, fields of one agent never do
    paths: set[str] = set()
    owners = [a.name for a in card.agents for _ in a.action] if card.agents else [""] * len(card.action)
    for i, (field, owner) in enumerate(zip(card.action, owners)):
        at = card.field_location(i)
        if field.path in paths:
            problems.append(f"{at}.path: '{field.path}' is mapped twice; give each native field one entry")
        paths.add(field.path)
        form = _check_form(field)
        if form:
            problems += [f"{at}.{p}" for p in form]
            continue
        spans = _check_spans(field) if field.parts is not None else []
        problems += [f"{at}.{p}" for p in spans]
        for j, part in enumerate(field.as_parts()):
            pat = at if field.parts is None else f"{at}.parts[{j}]"
            for k, name in enumerate(part.slots):
                if name not in table:
                    problems.append(f"{pat}.slots[{k}]: unknown slot '{name}'{did_you_mean(name, table)}")
                elif (owner, name) in first_use:
                    problems.append(f"{pat}.slots[{k}]: slot '{name}' is already filled by {first_use[owner, name]}")
                else:
                    first_use[owner, name] = f"{pat}.slots[{k}]"
            if not spans and all(name in table for name in part.slots):
                problems += [f"{pat}.{p}" for p in _check_part(field, part, [table[n] for n in part.slots])]
    every, chunk = card.frame_every, card.tokenizer.chunk_length
    if chunk % every:  # any source with the key: the loader's frame stride (the chunk length) must land on stored frames
        problems.append(f"source.frame_every: {every} must divide tokenizer.chunk_length {chunk} (clips show a frame "
                        f"every {chunk} steps, and one is stored only every {every} steps)")
    names = [c.name for c in card.cameras]
    for dup in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"cameras: camera name '{dup}' is used twice")
    inst = card.instruction
    if inst is not None:
        if inst.location == "constant" and not inst.text:
            problems.append("instruction.text: a 'constant' instruction needs its text")
        if inst.location != "constant" and not inst.path:
            problems.append(f"instruction.path: an instruction in the {inst.location} needs its path")
    src = card.source
    if src.type == "pettingzoo" and not card.agents:
        problems.append("agents: required for a pettingzoo source: each agent of the scene, in the scene's order")
    if card.agents and src.type in ("gymnasium", "robosuite"):
        problems.append(f"agents: a {src.type} source has one agent; list its action fields under 'action'")
    if src.type == "robosuite" and abs(card.control_frequency_hz - src.control_freq) > 1e-9:
        problems.append(f"control_frequency_hz: {card.control_frequency_hz:g}, but source.control_freq is {src.control_freq}; "
                        f"expected the rate the simulator is stepped at")
    if src.type == "robosuite" and any(c.key != "render" for c in card.cameras):
        problems.append("cameras: a robosuite card's cameras read key 'render' (the free camera of source.camera)")
    return problems


def _check_form(field: ActionField) -> list[str]:
    """A field maps either as a whole (units, slots, ...) or in parts, never both."""
    if field.parts is not None:
        flat = [k for k in FLAT_KEYS if getattr(field, k) is not None]
        if flat:
            return [f"parts: the field also gives {', '.join(flat)}; a field maps either as a whole ({', '.join(FLAT_KEYS)}) "
                    f"or in parts, each part with its own"]
        return []
    return [f"{k}: required field is missing (or split the field into parts)" for k in ("units", "slots") if getattr(field, k) is None]


def _span(p) -> str:
    return f"[{p.start}, {p.stop})"


def _check_spans(field: ActionField) -> list[str]:
    """Parts cover the field's values exactly once: non-empty, inside the shape, no overlap, no gap."""
    n, problems = field.size, []
    of = f"of '{field.path}' (shape {field.shape}, {n} values)"
    usable = []
    for j, p in enumerate(field.parts):
        if p.start >= p.stop:
            problems.append(f"parts[{j}].dims: {_span(p)} {of} is empty; expected start < stop")
        elif p.stop > n:
            problems.append(f"parts[{j}].dims: {_span(p)} goes past the values {of}; expected stop <= {n}")
        else:
            usable.append((p.start, p.stop, j))
    usable.sort()
    covered = 0
    for (a, b, j), prev in zip(usable, [None] + usable[:-1]):
        if prev is not None and a < prev[1]:
            problems.append(f"parts[{j}].dims: [{a}, {b}) overlaps parts[{prev[2]}] [{prev[0]}, {prev[1]}) {of}; "
                            f"expected every value in exactly one part")
        elif a > covered:
            problems.append(f"parts: values [{covered}, {a}) {of} are in no part; expected the parts to cover all {n} values")
        covered = max(covered, b)
    if not problems and covered < n:
        problems.append(f"parts: values [{covered}, {n}) {of} are in no part; expected the parts to cover all {n} values")
    return problems


def _check_part(field: ActionField, part: ActionPart, slots: list) -> list[str]:
    """One part (a whole field is one part over all its values): slots, units, kind, range and transform agree."""
    whole = field.parts is None
    n_native, n_slots = part.size, len(slots)
    of = f"a field of {n_native} values" if whole else f"dims {_span(part)} of '{field.path}' ({n_native} values)"
    t, kind = part.transform, part.kind
    problems: list[str] = []
    problems += _check_per_dim("units", part.units, n_native, of)
    if part.range is not None:
        problems += _check_range(part.range, n_native, of)
    if t.type == "table":
        return problems + _check_table(field, part, slots, of)
    if kind == "categorical":
        kinds_ok = all(s.kind is SlotKind.CATEGORICAL for s in slots)
        if not kinds_ok:
            problems.append(f"transform: a categorical {'field' if whole else 'part'} needs a 'table' transform onto its slots")
            return problems
    if n_slots != n_native:
        shape = f" (shape {field.shape})" if whole else ""
        return problems + [f"slots: {n_slots} slots listed for {of}{shape}"]
    for s in slots:
        if s.kind.value != kind:
            problems.append(f"kind: '{kind}' but slot '{s.name}' is {s.kind.value}")
            break
    if t.type == "rpy_to_rotvec":
        if not _one_arms_rotation(slots):
            got = "" if whole else f", got {of}"
            problems.append(f"transform: rpy_to_rotvec maps 3 angles onto an arm's eef_rot_delta.{{x,y,z}} slots, in that order{got}")
        units_after: str | list[str] = "rad"
    elif t.type == "affine":
        problems += _check_per_dim("transform.scale", t.scale, n_native, of)
        problems += _check_per_dim("transform.offset", t.offset, n_native, of)
        problems += _check_per_dim("transform.units", t.units, n_native, of)
        if not problems and np.any(per_dim(t.scale, n_native) == 0):
            problems.append("transform.scale: must be non-zero in every dimension (the transform must be invertible)")
        units_after = t.units
    else:
        units_after = part.units
    if not problems:
        for k, s in enumerate(slots):
            u = units_after if isinstance(units_after, str) else units_after[k]
            if u != s.units:
                hint = "" if t.type == "affine" else "; convert with an affine transform that states its units"
                problems.append(f"units: '{u}' for slot '{s.name}', which is in '{s.units}'{hint}")
                break
    return problems


def _one_arms_rotation(slots: list) -> bool:
    """Three slots: x, y, z of one group's eef_rot_delta, in that order (the rotation vector's components)."""
    names = [s.name for s in slots]
    if len(names) != 3 or not names[0].endswith(".eef_rot_delta.x"):
        return False
    group = names[0][: -len(".x")]
    return names == [f"{group}.x", f"{group}.y", f"{group}.z"]


def _check_per_dim(name: str, value, n: int, of: str) -> list[str]:
    if isinstance(value, list) and len(value) != n:
        return [f"{name}: {len(value)} values listed for {of}"]
    return []


def _check_range(rng, n: int, of: str) -> list[str]:
    problems = _check_per_dim("range.low", rng.low, n, of) + _check_per_dim("range.high", rng.high, n, of)
    if problems:
        return problems
    low, high = per_dim(rng.low, n), per_dim(rng.high, n)
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
        return ["range: low and high must be finite numbers"]
    bad = np.nonzero(low > high)[0]
    if bad.size:
        k = int(bad[0])
        return [f"range: low {low[k]:g} > high {high[k]:g} in dimension {k}; expected low <= high"]
    return []


def _check_table(field: ActionField, part: ActionPart, slots: list, of: str) -> list[str]:
    t, n_native = part.transform, part.size
    whole = field.parts is None
    problems = []
    if part.kind != "categorical":
        problems.append(f"kind: a 'table' transform reads a categorical {'field' if whole else 'part'}, got '{part.kind}'")
    if t.input == "index" and n_native != 1:
        problems.append(f"shape: a table with input 'index' reads one integer, got shape {field.shape}" if whole else
                        f"dims: a table with input 'index' reads one integer, got {of}")
    if t.input == "onehot" and n_native != len(t.rows):
        problems.append(f"transform.rows: a one-hot {'field' if whole else 'part'} of {n_native} values needs {n_native} rows, got {len(t.rows)}")
    if t.labels is not None and len(t.labels) != len(t.rows):
        problems.append(f"transform.labels: {len(t.labels)} labels for {len(t.rows)} rows")
    for r, row in enumerate(t.rows):
        if len(row) != len(slots):
            problems.append(f"transform.rows[{r}]: {len(row)} values for {len(slots)} slots")
            break
        for s, v in zip(slots, row):
            if s.kind is SlotKind.BINARY and v not in (0, 1):
                problems.append(f"transform.rows[{r}]: {v!r} for binary slot '{s.name}'; expected 0 or 1")
            elif s.kind is SlotKind.CATEGORICAL and (v != int(v) or not 0 <= v < s.num_classes):
                problems.append(f"transform.rows[{r}]: {v!r} for slot '{s.name}'; expected a class in 0..{s.num_classes - 1}")
    rows = [tuple(r) for r in t.rows]
    first_at: dict[tuple, int] = {}
    repeats = [i for i, r in enumerate(rows) if first_at.setdefault(r, i) != i]  # linear: a dict, not list.index
    if not problems and not t.allow_repeated_rows and repeats:
        first = repeats[0]
        problems.append(f"transform.rows[{first}]: repeats an earlier row; rows must differ so decoding is unambiguous "
                        f"(set allow_repeated_rows: true if several native values really mean the same)")
    if part.range is not None and t.input == "index" and not problems:
        hi = float(per_dim(part.range.high, 1)[0])
        if hi != len(rows) - 1:
            problems.append(f"range.high: {hi:g}, but the table has values 0..{len(rows) - 1}")
    return problems
