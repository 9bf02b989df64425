"""National Provider Identifier check digit (Luhn over the 80840 card-issuer prefix)."""

from __future__ import annotations

# CMS defines the NPI check digit as ISO/IEC 7812 Luhn computed as if the number carried the
# health-industry issuer prefix 80840; the prefix contributes a constant 24 to the sum.
_PREFIX_SUM = 24


def npi_check_digit(first9: str) -> int:
    """Return the check digit for the first nine digits of an NPI."""
    if len(first9) != 9 or not first9.isascii() or not first9.isdigit():
        raise ValueError("an NPI body is exactly nine ASCII digits")
    total = _PREFIX_SUM
    # Double every other digit starting from the rightmost body digit (the check digit is not here).
    for pos, ch in enumerate(reversed(first9)):
        d = ord(ch) - 48
        if pos % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return (10 - total % 10) % 10


def is_valid_npi(npi: str) -> bool:
    """Return True when `npi` is ten ASCII digits whose last digit is the Luhn check digit."""
    if not isinstance(npi, str) or len(npi) != 10 or not npi.isascii() or not npi.isdigit():
        return False
    return npi_check_digit(npi[:9]) == ord(npi[9]) - 48
