"""The clip loader on real shards: determinism, partition over ranks and workers, exact resume, mixtures."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from unified_action.data.loader import ClipLoader, LoaderConfig, MixtureEntry
from unified_action.errors import DataError


def config(shard_data, datasets=("carracing",), weights=None, **kw) -> LoaderConfig:
    weights = weights or [1.0] * len(datasets)
    entries = tuple(MixtureEntry(str(shard_data[d].root), weight=w) for d, w in zip(datasets, weights))
    kw = {"batch_size": 3, "context_frames": 1, "future_frames": 2, "image_size": (32, 32), **kw}
    return LoaderConfig(datasets=entries, registry=str(shard_data["registry"].root), **kw)


def keys(batches) -> list[str]:
    return [k for b in batches for k in b["key"]]


def run(loader, n=None) -> list[dict]:
    out = []
    for b in loader:
        out.append(b)
        if n is not None and len(out) == n:
            break
    return out


def same_batches(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x["key"] == y["key"]
        for k in ("frames", "action_tokens", "action_mask", "action_slots", "embodiment"):
            assert np.array_equal(np.asarray(x[k]), np.asarray(y[k])), k


def test_clip_contents(shard_data):
    loader = ClipLoader(config(shard_data), rank=0, world_size=1)
    b = next(iter(loader))
    B, F = 3, 3
    assert tuple(b["frames"].shape) == (B, F, 32, 32, 3) and str(b["frames"].dtype) == "torch.uint8"
    tok = shard_data["registry"].load("carracing")
    assert tuple(b["action_tokens"].shape) == (B, F, tok.spec.max_tokens)
    assert bool(b["action_mask"].any()) and (b["embodiment"] == tok.spec.embodiment_token).all()
    assert b["instruction"][0].startswith("Drive")
    # the tokens decode to the clip's real actions: frames are one chunk apart (the frame stride is the chunk length),
    # and frame i's chunk is exactly the actions from it to the next frame
    assert (b["frame_stride"] == tok.spec.chunk_length).all()
    ep, start = b["key"][0].split("/")[1].split("@")
    actions = next(a for i, a in enumerate(shard_data["carracing"].iter_actions()) if i == int(ep))
    decoded = tok.decode_native(b["action_tokens"][0].numpy())
    L = tok.spec.chunk_length
    for i in range(F):
        want = actions[int(start) + i * L:int(start) + (i + 1) * L]
        assert np.abs(decoded.actions[i] - want).max() < 0.02  # bin tokenizer: within a bin of the truth


def test_same_seed_same_order_and_other_seed_other_order(shard_data):
    a = keys(run(ClipLoader(config(shard_data, seed=1), rank=0, world_size=1)))
    b = keys(run(ClipLoader(config(shard_data, seed=1), rank=0, world_size=1)))
    c = keys(run(ClipLoader(config(shard_data, seed=2), rank=0, world_size=1)))
    assert a == b and a != c and sorted(a) == sorted(c)


@pytest.mark.parametrize("world", [1, 2])
@pytest.mark.parametrize("workers", [0, 2])
def test_epoch_partition_over_ranks_and_workers(shard_data, world, workers):
    cfg = config(shard_data)
    loaders = [ClipLoader(cfg, rank=r, world_size=world, num_workers=workers) for r in range(world)]
    per_rank = [run(ld) for ld in loaders]
    assert len({len(b) for b in per_rank}) == 1  # equal batch counts: collectives never hang
    got = [k for batches in per_rank for k in keys(batches)]
    plan = loaders[0].plans[0]
    streams = world * max(1, workers)
    assert len(got) == len(set(got)) == streams * plan.per_stream  # no clip twice
    assert plan.total - len(got) < streams  # none missing but the remainder that cannot be split evenly
    all_clips = {f"carracing/{sh.episodes[e]}@{s}" for k, sh in enumerate(plan.ds.shards) for e, s in plan.items[k]}
    assert set(got) <= all_clips


def resume_points(shard_data) -> dict[str, int]:
    """Batches consumed before saving: 0, 1, mid-shard, exactly at a shard boundary, and the end (batch size 1)."""
    loader = ClipLoader(config(shard_data, batch_size=1), rank=0, world_size=1)
    plan = loader.plans[0]
    first = len(plan.items[int(plan.shard_order(0)[0])])
    assert first >= 3
    return {"zero": 0, "one": 1, "mid_shard": first // 2 + 1, "shard_boundary": first, "end": len(loader)}


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("point", ["zero", "one", "mid_shard", "shard_boundary", "end"])
def test_resume_gives_the_identical_continuation(shard_data, workers, point):
    n = resume_points(shard_data)[point]
    cfg = config(shard_data, batch_size=1)
    full = ClipLoader(cfg, rank=0, world_size=1, num_workers=workers)
    whole = run(full) + run(full)  # two epochs, uninterrupted

    first = ClipLoader(cfg, rank=0, world_size=1, num_workers=workers)
    head = run(first, n) if n else []
    state = first.state_dict()
    resumed = ClipLoader(cfg, rank=0, world_size=1, num_workers=workers)
    resumed.load_state_dict(state)
    tail = run(resumed)
    tail += run(resumed)[: len(whole) - n - len(tail)]
    same_batches(head + tail, whole)


def test_resume_refuses_other_workers_or_ranks(shard_data):
    cfg = config(shard_data)
    a = ClipLoader(cfg, rank=0, world_size=1, num_workers=0)
    run(a, 1)
    with pytest.raises(DataError, match="streams"):
        ClipLoader(cfg, rank=0, world_size=1, num_workers=2).load_state_dict(a.state_dict())
    with pytest.raises(DataError, match="world_size"):
        ClipLoader(cfg, rank=0, world_size=2).load_state_dict(a.state_dict())


def test_mixture_follows_weights_and_shares_one_vocabulary(shard_data):
    cfg = config(shard_data, datasets=("carracing", "ale_pong"), weights=[3.0, 1.0], epoch_clips=120, batch_size=8)
    loader = ClipLoader(cfg, rank=0, world_size=1)
    batches = run(loader)
    ds = np.concatenate([b["dataset"].numpy() for b in batches])
    assert len(ds) == 120
    assert 0.6 < (ds == 0).mean() < 0.9  # 3:1 weights -> 75% carracing
    emb = {int(d): int(e) for b in batches for d, e in zip(b["dataset"], b["embodiment"])}
    reg = shard_data["registry"]
    assert emb == {0: reg.spec("carracing").embodiment_token, 1: reg.spec("ale_pong").embodiment_token}
    # one padded width for the mixture: the longest tokenizer's
    assert batches[0]["action_tokens"].shape[-1] == max(reg.spec(n).max_tokens for n in ("carracing", "ale_pong"))
    again = run(ClipLoader(cfg, rank=0, world_size=1))
    assert keys(again) == keys(batches)


def test_shard_urls_brace_pattern_and_pipe_opt_in(shard_data):
    ds = shard_data["carracing"]
    names = sorted(s.name for s in ds.shards)
    parts = sorted({n.rsplit("-", 1)[0] for n in names})
    assert len(parts) == 1
    pattern = f"{ds.root}/{parts[0]}-{{00000..{len(names) - 1:05d}}}.tar"
    base = keys(run(ClipLoader(config(shard_data), rank=0, world_size=1)))
    braced = replace(config(shard_data), datasets=(MixtureEntry(str(ds.root), shards=pattern),))
    assert keys(run(ClipLoader(braced, rank=0, world_size=1))) == base
    piped = "::".join(f"pipe:cat {ds.root}/{n}" for n in names)
    refused = replace(braced, datasets=(MixtureEntry(str(ds.root), shards=piped),))
    with pytest.raises(DataError, match=r"data\.allow_pipe: true"):
        run(ClipLoader(refused, rank=0, world_size=1))
    allowed = replace(refused, allow_pipe=True)
    assert keys(run(ClipLoader(allowed, rank=0, world_size=1))) == base


def test_episode_range_selects_exactly_those_episodes(shard_data):
    """Few-shot and held-out splits: `episodes=(lo, hi)` yields clips of episodes lo..hi-1 only (across shards)."""
    def episodes_seen(rng):
        entry = MixtureEntry(str(shard_data["carracing"].root), episodes=rng)
        cfg = LoaderConfig(datasets=(entry,), registry=str(shard_data["registry"].root), batch_size=2,
                           context_frames=1, future_frames=2, image_size=(32, 32))
        return {int(k.split("/")[1].split("@")[0]) for k in keys(run(ClipLoader(cfg, rank=0, world_size=1)))}

    names = [e for s in shard_data["carracing"].shards for e in s.episodes]  # manifest order, 2 per shard
    assert episodes_seen((1, 4)) == set(names[1:4])  # crosses a shard boundary
    assert episodes_seen(None) == set(names)
    with pytest.raises(DataError, match=r"episodes: \[4, 9\) is not a non-empty range within the dataset's 6 episodes"):
        episodes_seen((4, 9))


def test_a_frame_stride_other_than_the_chunk_length_is_refused(shard_data):
    L = shard_data["registry"].load("carracing").spec.chunk_length
    cfg = config(shard_data)
    bad = replace(cfg, datasets=(replace(cfg.datasets[0], frame_stride=L + 1),))
    with pytest.raises(DataError, match=f"frame_stride {L + 1}: frames must be one action chunk apart"):
        ClipLoader(bad, rank=0, world_size=1)
    ok = replace(cfg, datasets=(replace(cfg.datasets[0], frame_stride=L),))
    assert ClipLoader(ok, rank=0, world_size=1).plans[0].stride == L


def test_workers_persist_across_epochs_and_restart_after_an_epoch_left_early(shard_data):
    loader = ClipLoader(config(shard_data), rank=0, world_size=1, num_workers=2)

    def pids():
        return [w.pid for w in loader._source._iterator._workers]

    first = keys(run(loader))
    before = pids()
    second = keys(run(loader))
    assert pids() == before and sorted(second) == sorted(first) and second != first  # same workers, next epoch's order
    run(loader, 1)  # left early: those workers ran ahead of what was consumed, so they are replaced
    rest = keys(run(loader))
    assert pids() != before and len(rest) == len(first) - 3  # the epoch goes on after its first batch (of 3 clips)
    loader.close()
    assert loader._source is None
