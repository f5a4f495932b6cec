"""Few-shot fine-tuning of a pretrained world model on a new embodiment: register it, choose what trains, train.

`finetune(cfg)` runs a job whose `finetune:` section names a pretrained export. Before training, every
dataset whose tokenizer the registry lacks is registered from the very episodes the job trains on (its
first K), through `uact tokenizer register`'s code path; registration only appends ids, and the pretrained
model's tokenizers are checked by content hash first (a registry missing one of them could hand its
embodiment id to the newcomer). Then the pretraining Trainer runs unchanged (checkpoints, exact resume, NaN
guard) with one hook applied after the pretrained weights are loaded and before DeepSpeed sees the model:

    full     everything trains, as in pretraining.
    lora     frozen base; low-rank adapters on every block's attention (spatial and temporal qkv, proj) and MLP
             linears; the action path (the new embodiment's tokens need embeddings and a way in) and the adaLN
             modulation (blocks' and final `ada`) train whole.
    adapter  only the new embodiment's own rows (its embodiment token, its BPE block, embedding rows of slots
             no pretrained tokenizer uses) and the adaLN modulation train. Every other row of the embedding
             tables stays bit-exact: their gradient is masked and the tables are not weight-decayed.

With `reset_output`, the output layer (its modulation and its linear) is zeroed first, as at initialisation, and
trains in every mode: the fine-tune starts at
copy-last on the new embodiment, as an untrained model does, instead of at the motion the pretrained head
draws on a scene it never saw.

A new embodiment's embedding row (its embodiment token's row of the action-token table) starts as the pretrained
table holds it (`finetune.new_embodiment_init: unchanged`, a row no data ever reached), or, with `shared_slots`,
as the mean of the rows of the pretrained embodiments whose tokenizers share the most slots with it (a held-out
arm whose card maps the same `right_arm.*` slots starts where the other arms are). `train.steps: 0` makes the
job a zero-shot one (K = 0): it registers, initialises and writes the export at once, without training.

The export merges the adapters into the base weights: it is a plain WorldModel (`load_pretrained` loads it)
whose config lists the pretrained tokenizers and the new ones with their hashes, and the mode it was tuned with.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from unified_action.errors import ConfigError
from unified_action.models.lora import LoRALinear
from unified_action.models.spec import ModelSpec, model_spec
from unified_action.training.config import TrainConfig

MODES = ("full", "lora", "adapter")


def _mask_rows(param: nn.Parameter, rows: set[int]) -> torch.Tensor:
    """Only `rows` of this embedding table get a gradient (a hook zeroes the rest before any optimizer sees it)."""
    mask = torch.zeros(param.shape[0], 1)
    mask[sorted(rows)] = 1.0
    param.register_hook(lambda g: g * mask.to(device=g.device, dtype=g.dtype))
    return mask


def adapt_model(model: nn.Module, mode: str, *, token_rows: set[int], slot_rows: set[int],
                position_rows: set[int] = frozenset(), rank: int = 8, alpha: float = 16.0,
                spec: ModelSpec | None = None) -> tuple[list[nn.Parameter], int]:
    """Apply a fine-tuning mode to a model in place, through its spec -> (parameters kept out of weight decay,
    trainable count).

    token_rows: ids of the action-token table only the new embodiments use; slot_rows: rows of the slot table
    (slot id + 1) no pretrained tokenizer uses; position_rows: positions beyond the pretrained chunk length (the
    table grew for the new tokenizer's longer chunks). Only `adapter` mode reads them."""
    if mode not in MODES:
        raise ConfigError(f"finetune.mode: {mode!r}, expected one of {', '.join(MODES)}")
    spec = spec or model_spec()
    if mode == "full":
        return [], sum(p.numel() for p in model.parameters())
    tables = spec.embeddings(model)
    conditioning = spec.conditioning(model)
    model.requires_grad_(False)
    for m in conditioning:  # adaLN: how conditioning steers every layer
        m.requires_grad_(True)
    # Decoupled weight decay would shrink the rows of embodiments absent from the few-shot data, with no signal
    # to hold them: what pretraining learned would fade. Embedding tables are therefore never decayed here.
    no_decay = [tables[k].weight for k in ("token", "slot", "step", "position")]
    if mode == "lora":
        for parent, name in spec.lora_targets(model):
            setattr(parent, name, LoRALinear(getattr(parent, name), rank, alpha))
        for m in spec.action_path(model):  # the new embodiment's tokens need embeddings, and a way in
            m.requires_grad_(True)
        return no_decay, sum(p.numel() for p in model.parameters() if p.requires_grad)
    # adapter: the new embodiment's own rows only. The step/position embeddings and the attention pooling stay
    # frozen: they mean the same for every embodiment and were learned from far more data than K episodes give;
    # training them would change how every pretrained embodiment's actions are read.
    tables["token"].weight.requires_grad_(True)
    _mask_rows(tables["token"].weight, token_rows)
    if slot_rows:  # slots new to the model have only their random initial rows
        tables["slot"].weight.requires_grad_(True)
        _mask_rows(tables["slot"].weight, slot_rows)
    if position_rows:  # so do positions only the new, longer chunks reach
        tables["position"].weight.requires_grad_(True)
        _mask_rows(tables["position"].weight, position_rows)
    width = tables["token"].weight.shape[1]
    ada = sum(p.numel() for m in conditioning for p in m.parameters())
    return [*no_decay[:2], *([tables["position"].weight] if position_rows else [])], \
        ada + (len(token_rows) + len(slot_rows) + len(position_rows)) * width


def reset_output(model: nn.Module, spec: ModelSpec | None = None) -> int:
    """Put the model's output layer back to its initialisation, zeros (the untrained model's: it predicts no change,
    copy-last), and make it train where the mode froze it -> the parameters that now train and did not before."""
    out = (spec or model_spec()).output(model)
    with torch.no_grad():
        for p in out.parameters():
            p.zero_()
    newly = sum(p.numel() for p in out.parameters() if not p.requires_grad)
    out.requires_grad_(True)
    return newly


def owned_rows(registry, new: list[str], pretrained: list[str]) -> tuple[set[int], set[int]]:
    """(token ids, slot-table rows) the new tokenizers use and no pretrained one does."""
    def rows(names):
        tokens, slots = set(), set()
        for n in names:
            s = registry.spec(n)
            tokens.add(s.embodiment_token)
            if s.bpe_start is not None:
                tokens.update(range(s.bpe_start, s.bpe_start + s.bpe_size))
            slots.update(i + 1 for i in s.slot_ids)  # the encoder's slot row is slot id + 1
        return tokens, slots
    (t_new, s_new), (t_old, s_old) = rows(new), rows(pretrained)
    return t_new - t_old, s_new - s_old


# ------------------------------------------------------------------------------------------------ new embodiments
@dataclass(frozen=True)
class Donors:
    """Where a new tokenizer's embodiment row starts (new_embodiment_init: shared_slots)."""

    new: str  # the new tokenizer
    embodiment: str  # its card's embodiment
    donors: tuple[str, ...]  # pretrained tokenizers sharing the most slots with it ((): its row is kept)
    shared: int  # slots each donor shares
    slots: int  # the new tokenizer's slots
    kept: str = ""  # why its row is kept as it is (its embodiment is already a pretrained one's)


def plan_shared_slots(cfg: TrainConfig, pre: dict, new: list[str], where: str = "") -> list[Donors]:
    """For each new tokenizer, from its dataset's card (before anything is registered), the pretrained tokenizers
    that share the most slots with it; a ConfigError (one line) when one shares no slot with any."""
    from unified_action.data.dataset import open_dataset
    from unified_action.tokenization import Registry
    from unified_action.tokenization.sharing import slot_donors

    where = where or cfg.name
    registry = Registry(cfg.data.registry)
    pretrained = {n: registry.spec(n) for n in sorted(pre["tokenizers"])}
    cards = {}
    for e in cfg.data.datasets:
        card = open_dataset(e.path).card
        if card.name in new:
            cards[card.name] = card
    out = []
    for name in new:
        card = cards[name]
        same = sorted(n for n, s in pretrained.items() if s.embodiment == card.embodiment)
        slots = card.mapping.slot_names
        if same:  # a new tokenizer of an embodiment the model knows: its token, and row, are already trained
            out.append(Donors(name, card.embodiment, (), 0, len(slots), kept=f"embodiment '{card.embodiment}' is "
                              f"{', '.join(same)}'s, whose row is trained"))
            continue
        donors, shared = slot_donors(slots, {n: s.slots for n, s in pretrained.items()})
        if not donors:
            raise ConfigError(f"{where}: finetune.new_embodiment_init: shared_slots, but no tokenizer of the pretrained "
                              f"model ({cfg.finetune.init_from}) "
                              f"shares a slot with '{name}' ({', '.join(slots[:4])}{' ...' if len(slots) > 4 else ''}); "
                              f"use 'unchanged'")
        out.append(Donors(name, card.embodiment, tuple(donors), shared, len(slots)))
    return out


def init_shared_slots(model: nn.Module, registry, plan: list[Donors], log: Callable[[str], None] = print,
                      spec: ModelSpec | None = None) -> dict:
    """Set each new embodiment's row of the action-token table to the mean of its donors' embodiment rows (distinct
    tokens, each once) -> what was done, per new tokenizer, for the run's record."""
    table = (spec or model_spec()).embeddings(model)["token"].weight
    info = {}
    for d in plan:
        token = registry.spec(d.new).embodiment_token
        if d.kept:
            log(f"new_embodiment_init: '{d.new}' (token {token}) keeps its row: {d.kept}")
            info[d.new] = {"token": token, "kept": d.kept}
            continue
        tokens = sorted({registry.spec(n).embodiment_token for n in d.donors})
        with torch.no_grad():
            table[token] = table[tokens].mean(0)
        log(f"new_embodiment_init: '{d.new}' (embodiment '{d.embodiment}', token {token}) starts as the mean of "
            f"{', '.join(d.donors)} (tokens {', '.join(map(str, tokens))}): {d.shared} of its {d.slots} slots shared")
        info[d.new] = {"token": token, "donors": list(d.donors), "donor_tokens": tokens, "shared_slots": d.shared}
    return info


# ------------------------------------------------------------------------------------------------ the job
def prepare(cfg: TrainConfig, where: str = "") -> tuple[TrainConfig, dict, list[str]]:
    """Check the job against its pretrained export -> (job with K applied, export config, new tokenizer names).

    The registry must hold every tokenizer the pretrained model knows, by content hash: registering a newcomer
    into a registry missing one could give it that embodiment's id. Registers nothing."""
    from unified_action.data.dataset import open_dataset
    from unified_action.tokenization import Registry
    from unified_action.training.export import check_tokenizers, read_export
    from unified_action.training.trainer import _check_datasets

    where = where or cfg.name
    fs = cfg.finetune
    if fs is None:
        raise ConfigError(f"{where}: finetune: missing; a fine-tuning job names its pretrained export in finetune.init_from")
    _check_datasets(cfg, where)
    pre = read_export(fs.init_from, weights=False)[0]  # config.json checked against the copy in the weights, bounded
    check_tokenizers(pre, Registry(cfg.data.registry), fs.init_from)
    datasets, new = [], []
    for e in cfg.data.datasets:
        name = open_dataset(e.path).name
        if name not in pre["tokenizers"]:
            new.append(name)
            if fs.episodes is not None and e.episodes is None:
                e = e.model_copy(update={"episodes": (0, fs.episodes)})
        datasets.append(e)
    data = cfg.data.model_copy(update={"datasets": datasets})
    return cfg.model_copy(update={"data": data}), pre, sorted(set(new))


def register_new(cfg: TrainConfig, log: Callable[[str], None] = print) -> list[str]:
    """Register the tokenizer of every dataset the registry lacks, from the episodes the job trains on,
    as `uact tokenizer register --data <dataset>` would. -> names registered."""
    from unified_action.data.dataset import open_dataset, shard_episodes
    from unified_action.tokenization import Registry
    from unified_action.training.preflight import fitted_from

    reg = Registry(cfg.data.registry)
    done = []
    for e in cfg.data.datasets:
        ds = open_dataset(e.path)
        if ds.name in reg.names():
            continue
        episodes, stats = shard_episodes(ds.root, ds.card, e.episodes)
        tok = reg.register(ds.card, episodes, stats=stats, fitted_from=fitted_from(ds, e.episodes or (0, ds.episodes)))
        log(f"registered '{ds.name}' from {len(episodes)} episodes of {ds.root} (embodiment token "
            f"{tok.spec.embodiment_token}, hash {tok.content_hash[:12]})")
        done.append(ds.name)
    return done


def finetune_trainer(cfg: TrainConfig, *, config_path: str = "", resume: bool = True, overwrite: bool = False):
    """This process's Trainer of a fine-tuning job: checked, new tokenizers registered (by rank 0), mode applied."""
    from unified_action.tokenization import Registry
    from unified_action.training.distributed import barrier, init_distributed
    from unified_action.training.preflight import check_job
    from unified_action.training.trainer import Adaptation, Trainer

    cfg, pre, new = prepare(cfg, config_path)
    fs = cfg.finetune
    if cfg.train.steps == 0:
        raise ConfigError(f"{config_path or cfg.name}: train.steps: 0: run it with finetune() (uact finetune), which "
                          f"exports the initialised model without a trainer")
    donors = plan_shared_slots(cfg, pre, new, config_path) if fs.new_embodiment_init == "shared_slots" else None
    dist = init_distributed()
    # the whole job (model against the export, data, registry, output) is checked before anything is registered
    check_job(cfg, config_path or cfg.name, overwrite=overwrite, init_from=fs.init_from, world_size=dist.world_size,
              pending=new)
    if dist.is_main:
        register_new(cfg)
    barrier()  # every rank reads the registry only once rank 0 has written it
    registry = Registry(cfg.data.registry)
    pretrained = sorted(pre["tokenizers"])

    def adapt(model: nn.Module) -> Adaptation:
        # before the mode: the row starts from its donors whatever trains (a resumed run loads its checkpoint over it)
        init = init_shared_slots(model, registry, donors, log=print if dist.is_main else (lambda _: None)) \
            if donors is not None else None
        tokens, slots = owned_rows(registry, new, pretrained)
        positions = set(range(pre["model"]["max_action_tokens"], model.cfg.max_action_tokens))
        no_decay, trainable = adapt_model(model, fs.mode, token_rows=tokens, slot_rows=slots, position_rows=positions,
                                          rank=fs.lora_rank, alpha=fs.lora_alpha)
        if fs.reset_output:  # a resumed run loads its checkpoint over this afterwards
            trainable += reset_output(model)
        total = sum(p.numel() for n, p in model.named_parameters() if not n.endswith((".lora_A", ".lora_B")))
        info = _record(fs, new, pre, init, trainable)
        summary = (f"finetune {fs.mode}: {trainable:,} of {total:,} parameters train ({100 * trainable / total:.2f}%); "
                   f"new embodiments: {', '.join(new) or 'none'}")
        return Adaptation(info=info, no_decay=no_decay, tokenizers=pretrained, summary=summary)

    return Trainer(cfg, config_path=config_path, resume=resume, overwrite=overwrite, init_from=fs.init_from,
                   dist=dist, adapt=adapt)


def _record(fs, new: list[str], pre: dict, init: dict | None, trainable: int) -> dict:
    """What a fine-tune was, for its export's config and the run's log (a trained run's and a 0-step one's alike)."""
    return {"mode": fs.mode, "init_from": fs.init_from, "episodes": fs.episodes, "new_tokenizers": new,
            "reset_output": fs.reset_output, "new_embodiment_init": fs.new_embodiment_init,
            **({"shared_slots": init} if init is not None else {}),
            "pretrained_tokenizers": pre["tokenizers"], "trainable_parameters": trainable,
            **({"lora_rank": fs.lora_rank, "lora_alpha": fs.lora_alpha} if fs.mode == "lora" else {})}


def export_initialised(cfg: TrainConfig, *, config_path: str = "", overwrite: bool = False,
                       log: Callable[[str], None] = print):
    """A fine-tuning job of `train.steps: 0` (zero-shot, K = 0): checked, new tokenizers registered, the pretrained
    weights loaded with the new embodiments initialised (finetune.new_embodiment_init; finetune.reset_output if set),
    and written as the run's export, as a trained run's would be -> trainer.RunResult (step 0)."""
    from unified_action.tokenization import Registry
    from unified_action.training.checkpoint import complete_checkpoints
    from unified_action.training.export import export_meta, write_export
    from unified_action.training.preflight import check_job
    from unified_action.training.trainer import RunResult, build_model, init_weights_from

    where = config_path or cfg.name
    cfg, pre, new = prepare(cfg, where)
    fs = cfg.finetune
    out = Path(cfg.out)
    world = int(os.environ.get("WORLD_SIZE", 1))
    donors = plan_shared_slots(cfg, pre, new, where) if fs.new_embodiment_init == "shared_slots" else None
    check_job(cfg, where, overwrite=overwrite, init_from=fs.init_from, world_size=world, pending=new)
    if not overwrite and (out / "checkpoints").is_dir() and complete_checkpoints(out / "checkpoints"):
        raise ConfigError(f"{where}: out: {cfg.out} holds checkpoints of a run that trained; a 0-step job would put its "
                          f"export beside them: pass --overwrite, or choose another out")
    if int(os.environ.get("RANK", 0)) != 0:  # nothing to compute in parallel: rank 0 does it all
        return RunResult(out, 0, 0, math.nan, out / "export")
    if overwrite and out.exists():
        shutil.rmtree(out)
    register_new(cfg, log=log)
    registry = Registry(cfg.data.registry)
    names = sorted({_dataset_name(e.path) for e in cfg.data.datasets})
    max_tokens = max([registry.spec(n).max_tokens for n in names] + [pre["model"]["max_action_tokens"]])
    model = build_model(cfg, registry.vocabulary().size, max_tokens)
    init_weights_from(model, fs.init_from, registry, names)
    init = init_shared_slots(model, registry, donors, log=log) if donors is not None else None
    if fs.reset_output:
        reset_output(model)
    pretrained = sorted(pre["tokenizers"])
    info = {**_record(fs, new, pre, init, trainable=0), "steps": 0}
    run_info = {"config": where, "job": cfg.model_dump(mode="json"), "world_size": world, "finetune": info}
    meta = export_meta(model.cfg.to_dict(), registry, sorted(set(names) | set(pretrained)), run_info)
    out.mkdir(parents=True, exist_ok=True)
    export = write_export({k: v.detach() for k, v in model.state_dict().items()}, meta, out / "export",
                          trained={"step": 0, "run": run_info})
    log(f"exported {export} (0 steps: the pretrained model with {len(new)} new embodiment(s) "
        f"{'initialised from shared slots' if donors is not None else 'registered'})")
    return RunResult(out, 0, 0, math.nan, export)


def _dataset_name(path: str) -> str:
    from unified_action.data.dataset import open_dataset

    return open_dataset(path).name


def finetune(cfg: TrainConfig, *, config_path: str = "", resume: bool = True, overwrite: bool = False,
             stop_at: int | None = None, progress: bool = True):
    """Fine-tune to the end (or `stop_at`) -> trainer.RunResult; every process of the job calls it. A job of
    `train.steps: 0` exports its initialised model without training (export_initialised)."""
    if cfg.train.steps == 0:
        return export_initialised(cfg, config_path=config_path, overwrite=overwrite)
    trainer = finetune_trainer(cfg, config_path=config_path, resume=resume, overwrite=overwrite)
    return trainer.run(stop_at=stop_at, progress=progress)
