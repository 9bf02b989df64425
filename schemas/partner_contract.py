"""Partner contracts: load and check schemas/partners/<partner>.yaml (one per partner API).

A contract says how records routed to `partner:<id>` reach its API: endpoint, auth (OAuth2 client
credentials or HMAC, with a Secrets Manager secret id, never a secret), rate limit, concurrency,
timeout, retry and breaker policy, batch size, and per record type which fields go in the body and
which are re-identified. Which fields *may* be re-identified is not decided here: the caller passes
`allowed_reveal_fields` (from schemas/access), and a contract naming any other field is refused.
Every problem is reported at start-up with the file and the key.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator

from schemas import leaf_paths, raise_first_error
from schemas.phi_access import AccessRules

PARTNERS_DIR = Path(__file__).resolve().parent / "partners"
PARTNER_SCHEMA = Path(__file__).resolve().parent / "partner_contract.schema.json"
# Fields of the curated record outside its payload, addressed in a mapping as "$<name>".
ENVELOPE_FIELDS = frozenset({"record_id", "record_type", "feed", "business_key", "original_key",
                             "sent_at_ms", "ingested_at_ms", "source", "dt"})
AllowedReveal = Mapping[str, Collection[str]]  # record type -> leaf paths that may be re-identified
PARTNER_PURPOSE = "partner_delivery"  # the purpose a partner's role must hold in schemas/access


class PartnerContractError(ValueError):
    """A partner contract is invalid; the message names the file and the key."""


@dataclass(frozen=True)
class Auth:
    """How to authenticate: 'oauth2_client_credentials' (token_url, scope) or 'hmac' (algorithm, header)."""

    type: str
    secret_id: str
    token_url: str | None = None
    scope: str | None = None
    algorithm: str | None = None  # hmac only
    header: str | None = None  # hmac only
    timestamp_header: str | None = None  # hmac only


@dataclass(frozen=True)
class PayloadMapping:
    """For one record type: body field -> source ('$envelope' or canonical path), and the fields revealed."""

    fields: Mapping[str, str]
    reveal: tuple[str, ...] = ()


@dataclass(frozen=True)
class PartnerContract:
    """One partner's delivery definition, as loaded from schemas/partners/<partner>.yaml."""

    partner: str
    owner: str
    url: str
    method: str
    idempotency_header: str
    reference_field: str | None
    auth: Auth
    requests_per_second: float
    burst: int
    concurrency: int
    timeout_s: float
    lease_s: float
    batch_size: int
    retry: Mapping[str, Any]  # keyword arguments of udfs.delivery.RetryPolicy
    failure_threshold: int
    cooldown_s: float
    payload: Mapping[str, PayloadMapping]
    description: str = ""
    origin: str = field(default="", compare=False)


@functools.cache
def _validator() -> Draft202012Validator:
    return Draft202012Validator(json.loads(PARTNER_SCHEMA.read_text()))


def _covers(source: str, leaf: str) -> bool:
    # "service_lines" covers "service_lines[].units"; "payer" covers "payer.name".
    return leaf == source or leaf.startswith(source + ".") or leaf.startswith(source + "[]")


def _check_mapping(origin: str, record_type: str, doc: dict[str, Any], allowed: AllowedReveal) -> PayloadMapping:
    leaves = leaf_paths(record_type)
    where = f"{origin}: payload/{record_type}"
    for name, source in doc["fields"].items():
        if source.startswith("$"):
            if source[1:] not in ENVELOPE_FIELDS:
                raise PartnerContractError(f"{where}/fields/{name}: {source!r} is not an envelope field "
                                           f"(one of {', '.join('$' + f for f in sorted(ENVELOPE_FIELDS))})")
        elif not any(_covers(source, leaf) for leaf in leaves):
            raise PartnerContractError(f"{where}/fields/{name}: {source!r} is not a path of the {record_type} schema")
    reveal = tuple(doc.get("reveal") or ())
    permitted = frozenset(allowed.get(record_type, ()))
    sources = [s for s in doc["fields"].values() if not s.startswith("$")]
    for index, path in enumerate(reveal):
        if path not in leaves:
            raise PartnerContractError(f"{where}/reveal/{index}: {path!r} is not a leaf path of the "
                                       f"{record_type} schema")
        if path not in permitted:
            raise PartnerContractError(f"{where}/reveal/{index}: {path!r} is not in allowed_reveal_fields for "
                                       f"{record_type} (grant it in schemas/access first)")
        if not any(_covers(s, path) for s in sources):
            raise PartnerContractError(f"{where}/reveal/{index}: {path!r} is revealed but no body field sends it")
    return PayloadMapping(dict(doc["fields"]), reveal)


def parse_partner_contract(document: Any, origin: str, allowed_reveal_fields: AllowedReveal) -> PartnerContract:
    """Check one contract document against the schema, the canonical paths and the allowed reveal fields."""
    raise_first_error(_validator(), document, origin, PartnerContractError)
    doc: dict[str, Any] = document
    auth = dict(doc["auth"])
    own = {"hmac": ("algorithm", "header", "timestamp_header"), "oauth2_client_credentials": ("token_url", "scope")}
    for name in (n for kind, names in own.items() if kind != auth["type"] for n in names):
        if name in auth:
            raise PartnerContractError(f"{origin}: auth/{name}: not an option of {auth['type']} auth")
    if auth["type"] == "hmac":
        auth = {"algorithm": "sha256", "header": "X-Signature", "timestamp_header": "X-Timestamp"} | auth
    retry = dict(doc["retry"])
    if doc.get("lease_s", 120) <= doc["timeout_s"]:
        raise PartnerContractError(f"{origin}: lease_s: must exceed timeout_s ({doc['timeout_s']}), or a send "
                                   "still in flight loses its lease")
    breaker = doc.get("circuit_breaker") or {"failure_threshold": 20, "cooldown_s": 30}
    payload = {t: _check_mapping(origin, t, m, allowed_reveal_fields) for t, m in doc["payload"].items()}
    endpoint = doc["endpoint"]
    return PartnerContract(
        partner=doc["partner"], owner=doc["owner"], url=endpoint["url"], method=endpoint.get("method", "POST"),
        idempotency_header=endpoint.get("idempotency_header", "Idempotency-Key"),
        reference_field=endpoint.get("reference_field"),
        auth=Auth(type=auth.pop("type"), **auth),
        requests_per_second=float(doc["rate_limit"]["requests_per_second"]), burst=int(doc["rate_limit"]["burst"]),
        concurrency=int(doc["concurrency"]), timeout_s=float(doc["timeout_s"]), lease_s=float(doc.get("lease_s", 120)),
        batch_size=int(doc.get("batch_size", 1)), retry=retry,
        failure_threshold=int(breaker["failure_threshold"]), cooldown_s=float(breaker["cooldown_s"]),
        payload=payload, description=doc.get("description", ""), origin=origin,
    )


def load_partner_contract(path: Path, allowed_reveal_fields: AllowedReveal) -> PartnerContract:
    """Load and check one contract file; its file name must be the partner id."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise PartnerContractError(f"{path.name}: not valid YAML ({err.__class__.__name__})") from None
    except OSError as err:
        raise PartnerContractError(f"{path.name}: cannot be read ({err.strerror})") from None
    contract = parse_partner_contract(document, path.name, allowed_reveal_fields)
    if path.stem != contract.partner:
        raise PartnerContractError(f"{path.name}: partner: {contract.partner!r} must equal the file name {path.stem!r}")
    return contract


def load_partner_contracts(allowed_reveal_fields: AllowedReveal,
                           directory: Path = PARTNERS_DIR) -> dict[str, PartnerContract]:
    """All partner contracts in `directory`, by partner id."""
    paths = sorted(directory.glob("*.yaml"))
    if not paths:
        raise PartnerContractError(f"{directory}: no partner contracts (*.yaml)")
    return {c.partner: c for c in (load_partner_contract(p, allowed_reveal_fields) for p in paths)}


def partner_role(partner: str) -> str:
    """The access-rules role a partner's reveals are granted to."""
    return f"partner_{partner}"


def granted_reveal_fields(rules: AccessRules, partner: str) -> AllowedReveal:
    """What the access rules let this partner see (nothing without a role holding purpose partner_delivery)."""
    grant = rules.roles.get(partner_role(partner))
    if grant is None or PARTNER_PURPOSE not in grant.purposes:
        return {}
    return grant.fields


def load_granted_partner_contracts(rules: AccessRules, directory: Path = PARTNERS_DIR) -> dict[str, PartnerContract]:
    """All partner contracts in `directory`, each checked against its own role's grants."""
    paths = sorted(directory.glob("*.yaml"))
    if not paths:
        raise PartnerContractError(f"{directory}: no partner contracts (*.yaml)")
    contracts = (load_partner_contract(p, granted_reveal_fields(rules, p.stem)) for p in paths)
    return {c.partner: c for c in contracts}
