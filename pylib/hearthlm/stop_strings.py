"""Stop strings over streamed text."""
from __future__ import annotations

from typing import Sequence


class StopStrings:
    """Passes text through, holding back any tail that could begin a stop string."""

    def __init__(self, stops: Sequence[str]):
        self.stops = [s for s in stops if s]
        self.pending = ""

    def push(self, text: str) -> tuple[str, bool]:
        """-> (text that is final, whether a stop string was reached)."""
        self.pending += text
        hits = [i for i in (self.pending.find(s) for s in self.stops) if i >= 0]
        if hits:
            out, self.pending = self.pending[:min(hits)], ""
            return out, True
        keep = next((k for k in range(min(len(self.pending), max(map(len, self.stops), default=1) - 1), 0, -1)
                     if any(s.startswith(self.pending[-k:]) for s in self.stops)), 0)
        cut = len(self.pending) - keep
        out, self.pending = self.pending[:cut], self.pending[cut:]
        return out, False

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out
