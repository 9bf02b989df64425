"""The protect stage: a canonical record -> its protected form (tokens, masks, ciphertexts) + a sealed copy.

The protected form keeps the canonical shape. Per the feed's PHI policy each field is tokened,
encrypted (field ciphertext bound to feed, record id and path), masked, dropped or kept; derived
tokens (name + date of birth) are added beside their sources; a `_protection` header names the
policy, the token key version and, when a field was encrypted, the data key (its EDK) needed to
decrypt it. Analytics sinks project from the protected form and leave ciphertexts out. The sealed
copy is the whole canonical record, encrypted, for the archive and authorized re-identification.

A field the policy has no rule for raises PolicyGap (the record is dead-lettered sealed, never
passed on); a key-service failure raises a ProtectionError that stops the job rather than let a
record through unprotected.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import orjson

from schemas.phi_policy import DEAD_LETTER_DOMAIN, DerivedToken, FieldRule, PhiPolicy
from udfs.phi.envelope import (
    ActiveKey,
    DataKeyCache,
    decrypt_field,
    encrypt_field,
    field_aad,
    field_key_id,
    seal,
    unb64,
    unseal,
)
from udfs.phi.errors import PolicyGap, Tampered
from udfs.phi.masks import MASKS
from udfs.phi.tokens import Tokenizer

HEADER = "_protection"


# What the walk does with one key of an object; compiled once per record type.
_COPY, _DROP, _APPLY, _APPLY_EACH, _ENCRYPT_LIST, _OBJECT, _OBJECTS = range(7)


@dataclass
class _Node:
    children: dict[str, FieldRule | _Node] = field(default_factory=dict)
    derive: list[DerivedToken] = field(default_factory=list)
    clear: bool = True  # every rule below is "clear" and nothing is derived: copy the value as is
    plan: dict[str, tuple[int, Any]] = field(default_factory=dict)  # record key -> (step, rule or node)


def _compile(rules: Mapping[str, FieldRule], derived: tuple[DerivedToken, ...]) -> _Node:
    root = _Node()
    for path, rule in rules.items():
        node, parts = root, path.split(".")
        for part in parts[:-1]:
            child = node.children.setdefault(part, _Node())
            if not isinstance(child, _Node):
                raise PolicyGap(f"{path}: {part} is both a field and an object")
            node = child
        node.children[parts[-1]] = rule
    for token in derived:
        node = root
        for part in token.parent.split(".") if token.parent else ():
            child = node.children[part]
            if not isinstance(child, _Node):
                raise PolicyGap(f"derived {token.name}: {part} is not an object")
            node = child
        node.derive.append(token)

    def settle(node: _Node) -> bool:
        flags = [settle(c) if isinstance(c, _Node) else c.action == "clear" for c in node.children.values()]
        node.clear = all(flags) and not node.derive
        for name, child in node.children.items():
            key, many = (name[:-2], True) if name.endswith("[]") else (name, False)
            if isinstance(child, _Node):
                step = _COPY if child.clear else _OBJECTS if many else _OBJECT
            else:
                step = {"clear": _COPY, "drop": _DROP}.get(child.action, _APPLY)
                if step == _APPLY and many:
                    step = _ENCRYPT_LIST if child.action == "encrypt" else _APPLY_EACH
            node.plan[key] = (step, child)
        return node.clear

    settle(root)
    return root


def _person_text(value: object) -> str:
    # Names join across feeds only if spelled alike: case and inner spacing do not count.
    return " ".join(str(value).split()).casefold()


@dataclass(frozen=True)
class Protected:
    """A record's protected form and its sealed (encrypted, whole) canonical copy."""

    record: dict[str, Any]
    sealed: str


class _Record:
    """What one record's walk needs: where it belongs, its reference date, the key it encrypts under."""

    __slots__ = ("active", "domain", "feed", "on", "record_id")

    def __init__(self, feed: str, record_id: str, on: date, domain: str) -> None:
        self.feed, self.record_id, self.on, self.domain = feed, record_id, on, domain
        self.active: ActiveKey | None = None


class Protector:
    """Applies one PHI policy with one tokenizer and one data-key cache."""

    def __init__(self, policy: PhiPolicy, tokenizer: Tokenizer, keys: DataKeyCache) -> None:
        self.policy, self.tokenizer, self.keys = policy, tokenizer, keys
        self._plans = {t: _compile(policy.rules[t], policy.derived[t]) for t in policy.rules}
        self.fields = 0  # fields tokened, masked or encrypted so far (a metric: jobs/ingest_operator.py)

    def protect(self, record: Mapping[str, Any], record_type: str, canonical: bytes) -> Protected:
        """Protect a schema-valid canonical record; `canonical` is its JSON, sealed as is."""
        domain = self.policy.domains[record_type]
        ctx = _Record(record["feed"], record["record_id"], date.fromisoformat(record["sent_at"][:10]), domain)
        out = self._walk(self._plans[record_type], record, "", ctx)
        header: dict[str, Any] = {"policy": self.policy.name, "token_key": self.tokenizer.keys.current}
        if ctx.active is not None:
            key = ctx.active.key
            header |= {"domain": domain, "cmk": key.cmk, "kid": key.key_id, "edk": ctx.active.edk}
        out[HEADER] = header
        sealed = seal(self.keys, domain, canonical, record_context(ctx.feed, ctx.record_id))
        return Protected(out, sealed)

    def _walk(self, node: _Node, obj: Mapping[str, Any], prefix: str, ctx: _Record) -> dict[str, Any]:
        out: dict[str, Any] = {}
        plan = node.plan
        for key, value in obj.items():
            step, target = plan.get(key, (-1, None))  # target: a FieldRule or a _Node, as the step says
            if step == _COPY:
                out[key] = value
            elif step == _APPLY:
                out[key] = self._apply(target, value, prefix + key, ctx)
            elif step == _OBJECT and isinstance(value, dict):
                out[key] = self._walk(target, value, f"{prefix}{key}.", ctx)
            elif step == _OBJECTS and isinstance(value, list):
                out[key] = [self._walk(target, item, f"{prefix}{key}[{i}].", ctx) for i, item in enumerate(value)]
            elif step == _ENCRYPT_LIST:  # the whole list, as one ciphertext of its JSON
                out[key] = self._apply(target, orjson.dumps(value).decode(), f"{prefix}{key}[]", ctx)
            elif step == _APPLY_EACH and isinstance(value, list):
                out[key] = [self._apply(target, item, f"{prefix}{key}[{i}]", ctx) for i, item in enumerate(value)]
            elif step != _DROP:  # no rule, or a shape the schema does not allow: never pass it on
                raise PolicyGap(f"no rule for {prefix}{key} as it is shaped")
        for token in node.derive:
            parts = [obj.get(source) for source in token.sources]
            if all(isinstance(p, str) and p for p in parts):
                out[token.name] = self.tokenizer.token(token.name, "\x1f".join(_person_text(p) for p in parts))
        return out

    def _apply(self, rule: FieldRule, value: Any, path: str, ctx: _Record) -> str:
        self.fields += 1
        text = value if isinstance(value, str) else orjson.dumps(value).decode()
        if rule.action == "token":
            return self.tokenizer.token(rule.namespace or rule.path, text)
        if rule.action == "mask":
            return MASKS[rule.method or ""](text, ctx.on)
        if ctx.active is None:  # one data key per record: its EDK goes once into the header
            ctx.active = self.keys.encryption_key(ctx.domain)
        return encrypt_field(ctx.active, text, field_aad(ctx.feed, ctx.record_id, path))

    def open_record(self, sealed: str, feed: str, record_id: str) -> dict[str, Any]:
        """The canonical record inside a sealed archive copy (re-identification only)."""
        record: dict[str, Any] = orjson.loads(unseal(self.keys, sealed, record_context(feed, record_id)))
        return record

    def open_dead_letter(self, sealed: str, feed: str, dead_letter_id: str) -> bytes:
        """The payload of a dead letter (replay tooling and re-identification only)."""
        return unseal(self.keys, sealed, dead_letter_context(feed, dead_letter_id))

    def open_field(self, protected: Mapping[str, Any], path: str, ciphertext: str) -> str:
        """Decrypt one field ciphertext of a protected record at its concrete path ("dependents[0].first_name").

        An encrypted list ("notes[]") opens to the JSON text of the whole list.
        """
        header = protected.get(HEADER) or {}
        try:
            domain, cmk, kid, edk = header["domain"], header["cmk"], header["kid"], header["edk"]
        except KeyError:
            raise Tampered("the record's protection header names no data key") from None
        if field_key_id(ciphertext) != kid:
            raise Tampered("the field was encrypted under another data key than the record's")
        aead = self.keys.decryption_key(domain, kid, unb64(edk), cmk)
        return decrypt_field(aead, ciphertext, field_aad(protected["feed"], protected["record_id"], path))


def seal_dead_letter(keys: DataKeyCache, feed: str, dead_letter_id: str, data: bytes) -> str:
    """A dead letter's payload, encrypted whole under the dead-letter domain (whatever the feed's policy)."""
    return seal(keys, DEAD_LETTER_DOMAIN, data, dead_letter_context(feed, dead_letter_id))


def record_context(feed: str, record_id: str) -> dict[str, str]:
    """Encryption context of a record's sealed copy."""
    return {"feed": feed, "record_id": record_id, "purpose": "archive"}


def dead_letter_context(feed: str, dead_letter_id: str) -> dict[str, str]:
    """Encryption context of a dead letter's sealed payload."""
    return {"feed": feed, "dead_letter_id": dead_letter_id, "purpose": "dead_letter"}
