"""Episodes from simulators, RLDS and LeRobot into webdataset shards, and the clip loader that trains on them."""

from unified_action.data.episode import Episode

__all__ = ["Episode"]
