"""The time zones a reader picks from: a few common ones first, then every current IANA zone, no deprecated aliases."""

from __future__ import annotations

import difflib
import zoneinfo
from functools import cache
from pathlib import Path

# What most readers want, west to east; the rest follow in alphabetical order.
COMMON = (
    "UTC",
    "America/Los_Angeles",
    "America/Denver",
    "America/Chicago",
    "America/New_York",
    "America/Sao_Paulo",
    "Europe/London",
    "Europe/Paris",
    "Europe/Berlin",
    "Africa/Lagos",
    "Africa/Johannesburg",
    "Europe/Moscow",
    "Asia/Dubai",
    "Asia/Kolkata",
    "Asia/Shanghai",
    "Asia/Singapore",
    "Asia/Tokyo",
    "Australia/Sydney",
    "Pacific/Auckland",
)
_AREAS = ("Africa/", "America/", "Antarctica/", "Arctic/", "Asia/", "Atlantic/", "Australia/", "Europe/", "Indian/", "Pacific/")


@cache
def current() -> tuple[str, ...]:
    """Every current zone, sorted: the tz database's zone.tab (one per country region, as tzselect offers them), so
    backward links such as Africa/Timbuktu or US/Pacific are left out; without that file, the area/city names."""
    known = _known()
    for folder in zoneinfo.TZPATH:
        table = Path(folder) / "zone.tab"
        if table.is_file():
            rows = (line.split("\t") for line in table.read_text(encoding="utf-8").splitlines() if line and not line.startswith("#"))
            listed = {row[2].strip() for row in rows if len(row) >= 3} & known
            if listed:
                return tuple(sorted(listed))
    return tuple(sorted(z for z in known if z.startswith(_AREAS)))


@cache
def choices() -> tuple[str, ...]:
    """The list a form offers: the common zones first, then every other current zone."""
    common = tuple(z for z in COMMON if z == "UTC" or z in set(current()))
    return common + tuple(z for z in current() if z not in common)


def is_zone(name: str) -> bool:
    """A name the config accepts (an alias such as US/Pacific too: it is valid, only not offered)."""
    return name in _known()


@cache
def _known() -> frozenset[str]:
    """Every zone name there is (available_timezones walks the zone folders at each call)."""
    return frozenset(zoneinfo.available_timezones())


def closest(name: str) -> str | None:
    """The IANA zone a misspelt name most likely means: the same name in other case, else the closest spelling."""
    known = sorted(z for z in _known() if "/" in z)
    by_case = {z.lower(): z for z in known}
    if name.lower() in by_case:
        return by_case[name.lower()]
    hint = difflib.get_close_matches(name, known, n=1, cutoff=0.8)
    return hint[0] if hint else None
