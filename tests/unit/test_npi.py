"""NPI check digit: the CMS Luhn rule over the 80840 prefix."""

from __future__ import annotations

import pytest

from udfs.npi import is_valid_npi, npi_check_digit


def test_known_valid_npi_from_the_cms_specification() -> None:
    assert npi_check_digit("123456789") == 3
    assert is_valid_npi("1234567893")


# Unicode digits pass str.isdigit(); an NPI is ASCII only.
FULLWIDTH = "".join(chr(0xFF10 + int(d)) for d in "1234567893")


@pytest.mark.parametrize("npi", ["1234567890", "1234567894", "2234567893", "123456789", "12345678931",
                                 "12345678a3", "", FULLWIDTH])
def test_rejects_wrong_check_digit_length_or_characters(npi: str) -> None:
    assert not is_valid_npi(npi)


def test_every_single_digit_change_is_caught() -> None:
    valid = "1234567893"
    for pos in range(10):
        for d in "0123456789":
            changed = valid[:pos] + d + valid[pos + 1:]
            assert is_valid_npi(changed) == (changed == valid)


def test_check_digit_matches_plain_luhn_on_the_prefixed_number() -> None:
    def luhn_ok(digits: str) -> bool:
        total = 0
        for i, ch in enumerate(reversed(digits)):
            d = int(ch) * (2 if i % 2 else 1)
            total += d - 9 if d > 9 else d
        return total % 10 == 0

    for body in ("100000000", "199999999", "287654321", "150000007", "000000000"):
        assert luhn_ok("80840" + body + str(npi_check_digit(body)))


def test_body_must_be_nine_digits() -> None:
    with pytest.raises(ValueError):
        npi_check_digit("12345678")
