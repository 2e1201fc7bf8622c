"""How counts are said in output and logs: "1 paper", "2 papers"."""

from __future__ import annotations


def counted(n: int, word: str, plural: str | None = None) -> str:
    """The number and the word, in the plural unless it is one."""
    return f"{n} {word if n == 1 else plural or word + 's'}"
