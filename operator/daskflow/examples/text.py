"""Small text helpers for the command-task example: a Python step between shell steps."""

from __future__ import annotations

from typing import Any


def word_stats(text: str) -> dict[str, Any]:
    """Lines, words and the longest word of a block of text (a command's stdout, say)."""
    lines = [line for line in str(text).splitlines() if line.strip()]
    words = [w for line in lines for w in line.split()]
    return {
        "lines": len(lines),
        "words": len(words),
        "longest": max(words, key=len) if words else "",
    }
