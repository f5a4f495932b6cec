"""Weights-only loading of DeepSpeed checkpoint files: nothing read from a checkpoint can run code.

DeepSpeed's `TorchCheckpointEngine.load` and `zero_to_fp32` unpickle with `torch.load(weights_only=False)`,
so a payload placed in `state/mp_rank_00_model_states.pt` would run on resume and on export. Every path of
ours loads with `weights_only=True` instead, allowing only the few plain types DeepSpeed stores besides
tensors (a loss-scaler record, a ZeRO stage enum, fragment addresses). A file holding anything else is
refused with one line naming it. Used by resume (checkpoint.py) and by export's consolidation (export.py).
"""

from __future__ import annotations

import contextlib
import pickle
import types
import zipfile

import torch

from unified_action.errors import TrainingError


def _deepspeed_globals() -> list:
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address]


def weights_only_load(path, map_location=None, **kwargs):
    """torch.load(path, weights_only=True) with DeepSpeed's plain record types allowed; TrainingError otherwise."""
    kwargs.pop("weights_only", None)
    try:
        with torch.serialization.safe_globals(_deepspeed_globals()):
            return torch.load(path, map_location=map_location, weights_only=True, **kwargs)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise TrainingError(f"{path}: refused: holds pickled objects a weights-only load does not allow ({first[:160]}); "
                            f"checkpoints of ours hold tensors and plain values only") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as e:
        raise TrainingError(f"{path}: not a readable checkpoint file ({type(e).__name__}: {str(e)[:160]})") from None


def install(engine) -> None:
    """Make a DeepSpeed engine load its checkpoints weights-only (its saves are unchanged)."""
    from deepspeed.runtime.checkpoint_engine import TorchCheckpointEngine

    ce = engine.checkpoint_engine
    if getattr(ce, "weights_only", False):
        return
    if type(ce) is not TorchCheckpointEngine:
        raise TrainingError(f"checkpoint engine {type(ce).__name__}: only DeepSpeed's TorchCheckpointEngine is supported "
                            f"(its loads are made weights-only)")
    ce.__class__ = _weights_only_engine_class()  # same state, same saves; only `load` differs


_ENGINE: list = []


def _weights_only_engine_class():
    if not _ENGINE:
        from deepspeed.runtime.checkpoint_engine import TorchCheckpointEngine

        class WeightsOnlyCheckpointEngine(TorchCheckpointEngine):
            weights_only = True

            def load(self, path: str, map_location=None):
                return weights_only_load(path, map_location=map_location)

        _ENGINE.append(WeightsOnlyCheckpointEngine)
    return _ENGINE[0]


class _WeightsOnlyTorch(types.ModuleType):
    """torch, but `load` is weights-only: handed to DeepSpeed's zero_to_fp32 module in place of `torch`."""

    def __init__(self):
        super().__init__("torch")

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def load(f, map_location=None, **kwargs):
        return weights_only_load(f, map_location=map_location, **kwargs)


@contextlib.contextmanager
def weights_only_zero_to_fp32():
    """DeepSpeed's zero_to_fp32 module with every torch.load in it weights-only, for the duration."""
    from deepspeed.utils import zero_to_fp32

    saved = zero_to_fp32.torch
    zero_to_fp32.torch = _WeightsOnlyTorch()
    try:
        yield zero_to_fp32
    finally:
        zero_to_fp32.torch = saved
