"""Time budgets: the one place a duration such as "30m" becomes seconds."""

from __future__ import annotations

import re

from muppets.errors import ConfigError


def parse_duration(text: str) -> float:
    """'90s', '30m', '1h', '1h30m' or plain seconds -> seconds."""
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", text)
    if not parts or "".join(n + u for n, u in parts) != text.replace(" ", ""):
        raise ConfigError(f"time_budget {text!r} is not a duration such as 90s, 30m, 1h or 1h30m")
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)
