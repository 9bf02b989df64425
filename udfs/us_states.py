"""USPS state codes: the 50 states, DC, the territories, the freely associated states and the military "states"."""

from __future__ import annotations

# USPS Publication 28, appendix B. The freely associated states (FM, MH, PW) are in because USPS
# delivers there as domestic mail and addresses (Faker's too) carry them.
USPS_STATES: dict[str, str] = {
    "AL": "Alabama", "AK": "Alaska", "AZ": "Arizona", "AR": "Arkansas", "CA": "California",
    "CO": "Colorado", "CT": "Connecticut", "DE": "Delaware", "FL": "Florida", "GA": "Georgia",
    "HI": "Hawaii", "ID": "Idaho", "IL": "Illinois", "IN": "Indiana", "IA": "Iowa",
    "KS": "Kansas", "KY": "Kentucky", "LA": "Louisiana", "ME": "Maine", "MD": "Maryland",
    "MA": "Massachusetts", "MI": "Michigan", "MN": "Minnesota", "MS": "Mississippi", "MO": "Missouri",
    "MT": "Montana", "NE": "Nebraska", "NV": "Nevada", "NH": "New Hampshire", "NJ": "New Jersey",
    "NM": "New Mexico", "NY": "New York", "NC": "North Carolina", "ND": "North Dakota", "OH": "Ohio",
    "OK": "Oklahoma", "OR": "Oregon", "PA": "Pennsylvania", "RI": "Rhode Island", "SC": "South Carolina",
    "SD": "South Dakota", "TN": "Tennessee", "TX": "Texas", "UT": "Utah", "VT": "Vermont",
    "VA": "Virginia", "WA": "Washington", "WV": "West Virginia", "WI": "Wisconsin", "WY": "Wyoming",
    "DC": "District of Columbia",
    "PR": "Puerto Rico", "GU": "Guam", "VI": "Virgin Islands", "AS": "American Samoa",
    "MP": "Northern Mariana Islands",
    "FM": "Federated States of Micronesia", "MH": "Marshall Islands", "PW": "Palau",
    "AA": "Armed Forces Americas", "AE": "Armed Forces Europe", "AP": "Armed Forces Pacific",
}

# Other spellings feeds actually send; keys are in the normalized form of `state_key`.
_ALIASES: dict[str, str] = {
    "WASHINGTON DC": "DC", "WASHINGTON D C": "DC", "D C": "DC",
    "US VIRGIN ISLANDS": "VI", "U S VIRGIN ISLANDS": "VI", "UNITED STATES VIRGIN ISLANDS": "VI",
    "VIRGIN ISLANDS OF THE UNITED STATES": "VI", "NORTHERN MARIANAS": "MP",
    "COMMONWEALTH OF THE NORTHERN MARIANA ISLANDS": "MP", "COMMONWEALTH OF PUERTO RICO": "PR",
    # AE covers Europe, Africa, Canada and the Middle East.
    "ARMED FORCES AFRICA": "AE", "ARMED FORCES CANADA": "AE", "ARMED FORCES MIDDLE EAST": "AE",
}


def state_key(text: str) -> str:
    """Normalize a state spelling for lookup: upper case, punctuation dropped, single spaces."""
    return " ".join(text.upper().replace(".", " ").replace(",", " ").split())


STATE_LOOKUP: dict[str, str] = {
    **{code: code for code in USPS_STATES},
    **{state_key(name): code for code, name in USPS_STATES.items()},
    **_ALIASES,
}


def usps_code(text: str) -> str | None:
    """Return the USPS code for a state code or name in any case, or None when it is not one."""
    return STATE_LOOKUP.get(state_key(text))
