"""Length penalties applied on top of judge scores."""

from __future__ import annotations


def soft_overlong_penalty(num_tokens: int, max_tokens: int | None, buffer_tokens: int, penalty: float) -> float:
    """DAPO-style soft penalty: 0 up to ``max_tokens - buffer_tokens``, then rising linearly to ``penalty`` at
    ``max_tokens`` (and staying there beyond it). Returns a non-negative amount to subtract.

    Example:
        >>> soft_overlong_penalty(3072, max_tokens=4096, buffer_tokens=2048, penalty=0.04)
        0.02
        >>> soft_overlong_penalty(1000, max_tokens=4096, buffer_tokens=2048, penalty=0.04)
        0.0
    """
    if max_tokens is None or penalty == 0:
        return 0.0
    threshold = max_tokens - buffer_tokens
    if num_tokens <= threshold:
        return 0.0
    if buffer_tokens <= 0:
        return penalty
    return penalty * min(1.0, (num_tokens - threshold) / buffer_tokens)
