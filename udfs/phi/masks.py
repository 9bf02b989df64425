"""HIPAA Safe Harbor style generalizations for analytics: birth year, age band, 3-digit ZIP."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

# 45 CFR 164.514(b)(2)(i)(B): 3-digit ZIP areas with 20,000 people or fewer (2000 Census, as HHS
# lists them) become "000".
RESTRICTED_ZIP3 = frozenset({"036", "059", "063", "102", "203", "556", "692", "790", "821", "823", "830", "831",
                             "878", "879", "884", "890", "893"})
_BANDS = ((0, 17), (18, 25), (26, 34), (35, 44), (45, 54), (55, 64), (65, 74), (75, 84), (85, 89))
OVER_89 = "90+"  # Safe Harbor: ages over 89, and years of birth that reveal them, become one category


def _age(birth: str, on: date) -> int:
    born = date.fromisoformat(birth)
    return on.year - born.year - ((on.month, on.day) < (born.month, born.day))


def birth_year(birth: str, on: date) -> str:
    """The year of birth, or "90+" when the person is 90 or older on `on`."""
    return OVER_89 if _age(birth, on) >= 90 else birth[:4]


def age_band(birth: str, on: date) -> str:
    """The age band on `on` ("35-44"), "90+" above 89."""
    age = _age(birth, on)
    for low, high in _BANDS:
        if low <= age <= high:
            return f"{low}-{high}"
    return OVER_89 if age >= 90 else "0-17"  # a birth date after `on` is refused by the rules stage


def zip3(code: str, _on: date) -> str:
    """The first three digits of a ZIP, or "000" for the sparsely populated areas."""
    prefix = code[:3]
    return "000" if prefix in RESTRICTED_ZIP3 else prefix


MASKS: dict[str, Callable[[str, date], str]] = {"year": birth_year, "age_band": age_band, "zip3": zip3}
