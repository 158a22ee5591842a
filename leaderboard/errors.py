"""The leaderboard's one exception (shared by the ledger and MLflow readers and the renderer)."""

from __future__ import annotations


class LeaderboardError(ValueError):
    """No results to render, or an unusable option; the message says what to do."""


__all__ = ["LeaderboardError"]
