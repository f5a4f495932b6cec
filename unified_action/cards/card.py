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
from unified_action.cards.mapping import ActionMapping, compile_mapping, field_size, per_dim
from unified_action.cards.schema import ActionField, CardHeader
from unified_action.errors import CardError, did_you_mean, pydantic_lines
from unified_action.safe_yaml import YamlProblem, safe_load


@dataclass(frozen=True)
class DataCard:
    header: CardHeader
    body: str
    text: str  # the whole file, as read: it travels with the tokenizer
    source_path: Path | None
    mapping: ActionMapping

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
    return DataCard(card.header, card.body, text, path, card.mapping)


def parse_card(text: str, where: str = "<card>") -> DataCard:
    header, body = _split_front_matter(text, where)
    try:
        model = CardHeader.model_validate(header)
    except ValidationError as e:
        raise CardError(pydantic_lines(e, where, _known_keys())) from None
    problems = [f"{where}: {p}" for p in check_semantics(model)]
    if problems:
        raise CardError(problems)
    return DataCard(model, body, text, None, compile_mapping(model.action, model.action_space_version))


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
    for model in (schema.CardHeader, schema.ActionField, schema.Camera, schema.TokenizerParams,
                  schema.FastParams, schema.Instruction, schema.Range, schema.Table, schema.Affine):
        keys.update(model.model_fields)
    return keys


# ------------------------------------------------------------------------------------------------
# Meaning: everything a schema cannot say. Each check returns 'field path: message' lines.
# ------------------------------------------------------------------------------------------------


def check_semantics(card: CardHeader) -> list[str]:
    version = card.action_space_version
    if version not in action_space.SLOT_COUNT_BY_VERSION:
        return [f"action_space_version: unknown version {version}, known: {sorted(action_space.SLOT_COUNT_BY_VERSION)}"]
    table = {s.name: s for s in action_space.slots(version)}
    problems: list[str] = []
    first_use: dict[str, str] = {}
    paths: set[str] = set()
    for i, field in enumerate(card.action):
        at = f"action[{i}]"
        if field.path in paths:
            problems.append(f"{at}.path: '{field.path}' is mapped twice; give each native field one entry")
        paths.add(field.path)
        for j, name in enumerate(field.slots):
            if name not in table:
                problems.append(f"{at}.slots[{j}]: unknown slot '{name}'{did_you_mean(name, table)}")
            elif name in first_use:
                problems.append(f"{at}.slots[{j}]: slot '{name}' is already filled by {first_use[name]}")
            else:
                first_use[name] = f"{at}.slots[{j}]"
        if all(name in table for name in field.slots):
            problems += [f"{at}.{p}" for p in _check_field(field, [table[n] for n in field.slots])]
    names = [c.name for c in card.cameras]
    for dup in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"cameras: camera name '{dup}' is used twice")
    if card.tokenizer.kind == "discrete":
        cont = [n for n in first_use if table[n].kind is SlotKind.CONTINUOUS]
        if cont:
            problems.append(f"tokenizer.kind: 'discrete' takes only binary and categorical slots, but {cont[0]} is continuous; use 'bin' or 'fast'")
    if card.tokenizer.kind in ("bin", "fast") and first_use and all(table[n].kind is not SlotKind.CONTINUOUS for n in first_use):
        problems.append(f"tokenizer.kind: '{card.tokenizer.kind}' needs a continuous slot, and this card has none; use 'discrete'")
    inst = card.instruction
    if inst is not None:
        if inst.location == "constant" and not inst.text:
            problems.append("instruction.text: a 'constant' instruction needs its text")
        if inst.location != "constant" and not inst.path:
            problems.append(f"instruction.path: an instruction in the {inst.location} needs its path")
    return problems


def _check_field(field: ActionField, slots: list) -> list[str]:
    n_native, n_slots = field_size(field), len(slots)
    t = field.transform
    problems: list[str] = []
    problems += _check_per_dim("units", field.units, n_native)
    if field.range is not None:
        problems += _check_range(field.range, n_native)
    if t.type == "table":
        return problems + _check_table(field, slots, n_native)
    if field.kind == "categorical":
        kinds_ok = all(s.kind is SlotKind.CATEGORICAL for s in slots)
        if not kinds_ok:
            problems.append("transform: a categorical field needs a 'table' transform onto its slots")
            return problems
    if n_slots != n_native:
        return problems + [f"slots: {n_slots} slots listed for a field of {n_native} values (shape {field.shape})"]
    for s in slots:
        if s.kind.value != field.kind:
            problems.append(f"kind: '{field.kind}' but slot '{s.name}' is {s.kind.value}")
            break
    if t.type == "rpy_to_rotvec":
        if n_native != 3 or not all(".eef_rot_delta." in s.name for s in slots):
            problems.append("transform: rpy_to_rotvec maps 3 angles onto an arm's eef_rot_delta.{x,y,z} slots")
        units_after: str | list[str] = "rad"
    elif t.type == "affine":
        problems += _check_per_dim("transform.scale", t.scale, n_native)
        problems += _check_per_dim("transform.offset", t.offset, n_native)
        problems += _check_per_dim("transform.units", t.units, n_native)
        if not problems and np.any(per_dim(t.scale, n_native) == 0):
            problems.append("transform.scale: must be non-zero in every dimension (the transform must be invertible)")
        units_after = t.units
    else:
        units_after = field.units
    if not problems:
        for k, s in enumerate(slots):
            u = units_after if isinstance(units_after, str) else units_after[k]
            if u != s.units:
                hint = "" if t.type == "affine" else "; convert with an affine transform that states its units"
                problems.append(f"units: '{u}' for slot '{s.name}', which is in '{s.units}'{hint}")
                break
    return problems


def _check_per_dim(name: str, value, n: int) -> list[str]:
    if isinstance(value, list) and len(value) != n:
        return [f"{name}: {len(value)} values listed for a field of {n} values"]
    return []


def _check_range(rng, n: int) -> list[str]:
    problems = _check_per_dim("range.low", rng.low, n) + _check_per_dim("range.high", rng.high, n)
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


def _check_table(field: ActionField, slots: list, n_native: int) -> list[str]:
    t = field.transform
    problems = []
    if field.kind != "categorical":
        problems.append(f"kind: a 'table' transform reads a categorical field, got '{field.kind}'")
    if t.input == "index" and n_native != 1:
        problems.append(f"shape: a table with input 'index' reads one integer, got shape {field.shape}")
    if t.input == "onehot" and n_native != len(t.rows):
        problems.append(f"transform.rows: a one-hot field of {n_native} values needs {n_native} rows, got {len(t.rows)}")
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
    if field.range is not None and t.input == "index" and not problems:
        hi = float(per_dim(field.range.high, 1)[0])
        if hi != len(rows) - 1:
            problems.append(f"range.high: {hi:g}, but the table has values 0..{len(rows) - 1}")
    return problems
