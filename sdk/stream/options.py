"""Runtime options checked before anything starts, with one rule per option.

``check_options`` is called by ``Stream`` (messages name the Python arguments) and by
``edgesentry watch`` with ``flags=True`` (messages name the command-line flags), so a bad value
is one clear line before a model is loaded, a file opened or a thread started.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from edgesentry.errors import ConfigError

#: the shortest status interval: a status line (and a summary rewrite) more often is noise
MIN_STATUS_INTERVAL_S = 0.05


def _int_at_least(low: int, high: int | None = None) -> tuple[Callable[[Any], bool], str]:
    def ok(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= low and (high is None or v <= high)
    return ok, f"an integer >= {low}" + (f" and <= {high}" if high is not None else "")


def _number_at_least(low: float, *, strict: bool = False) -> tuple[Callable[[Any], bool], str]:
    def ok(v: Any) -> bool:
        if not _finite(v):
            return False
        return v > low if strict else v >= low
    return ok, f"a finite number {'>' if strict else '>='} {low:g}"


def _finite(v: Any) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)


def _optional(rule: tuple[Callable[[Any], bool], str]) -> tuple[Callable[[Any], bool], str]:
    check, text = rule
    return (lambda v: v is None or check(v)), f"{text} (or unset)"


def _backoff_ok(v: Any) -> bool:
    try:
        first, longest = v
    except (TypeError, ValueError):
        return False
    number = _number_at_least(0)[0]
    return number(first) and number(longest) and first <= longest


#: option -> (command-line flag, check, what is expected)
RULES: dict[str, tuple[str, Callable[[Any], bool], str]] = {
    "batch_size": ("--batch", *_int_at_least(1)),
    "latency_budget_ms": ("--latency-budget", *_number_at_least(0)),
    "queue_size": ("--queue-size", *_int_at_least(1)),
    "max_frames": ("--max-frames", *_optional(_int_at_least(1))),
    "max_retries": ("--max-retries", *_int_at_least(0)),
    "backoff_s": ("--backoff", _backoff_ok, "two finite numbers 0 <= FIRST <= MAX"),
    "metrics_port": ("--metrics-port", *_optional(_int_at_least(0, 65535))),
    "status_interval_s": ("--status-interval", *_number_at_least(MIN_STATUS_INTERVAL_S)),
    "idle_timeout": ("--idle-timeout", *_optional(_number_at_least(0, strict=True))),
    "settle_s": ("--settle", *_number_at_least(0)),
    "max_restarts": ("--max-restarts", *_int_at_least(0)),
    "overlay_threshold": ("--overlay-threshold", *_optional((_finite, "a finite number"))),
    "torch_threads": ("--torch-threads", *_optional(_int_at_least(1))),
}


def check_options(*, flags: bool = False, **values: Any) -> None:
    """Check each given option against its rule.

    Args:
        flags: name the command-line flags in messages instead of the Python arguments.
        **values: options by their Python name (keys of ``RULES``).

    Raises:
        ConfigError: ``"--batch must be an integer >= 1; got 0"`` for the first bad option.
    """
    for name, value in values.items():
        flag, ok, expected = RULES[name]
        if not ok(value):
            raise ConfigError(f"{flag if flags else name} must be {expected}; got {value!r}")
