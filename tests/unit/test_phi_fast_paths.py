"""Protection's cheaper calls write the same bytes: tokens, linkage digests and base64url of sealed copies.

Tokenizer.token and Tokenizer.linkage copy a keyed HMAC instead of calling hmac.digest per value, and
envelope.b64 encodes with binascii and a translate instead of base64.urlsafe_b64encode. Readers
(re-identification, `reveal`, joins on tokens across runs) depend on these bytes, so each is compared
with the one-shot formula it replaced over generated keys and values (non-ASCII and empty included).
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from hypothesis import given, settings
from hypothesis import strategies as st

from udfs.phi.envelope import b64, unb64
from udfs.phi.tokens import Tokenizer, TokenKeys, _token

KEYS = st.binary(min_size=1, max_size=80)
TEXT = st.text(max_size=200)
SOME = settings(max_examples=1000, deadline=None)


@SOME
@given(KEYS, KEYS, st.integers(1, 999_999), TEXT, TEXT)
def test_token_is_the_one_shot_hmac_token(key: bytes, linkage: bytes, version: int, namespace: str,
                                          value: str) -> None:
    tokenizer = Tokenizer(TokenKeys(current=version, versions={version: key}, linkage=linkage))
    token = tokenizer.token(namespace, value)
    assert token == _token(f"t{version}.", key, namespace, value)
    assert tokenizer.token(namespace, value) == token  # the keyed original is never consumed by a copy
    assert tokenizer.matches(token, namespace, value)


@SOME
@given(KEYS, KEYS, TEXT)
def test_linkage_is_the_one_shot_hmac_digest(key: bytes, linkage: bytes, text: str) -> None:
    tokenizer = Tokenizer(TokenKeys(current=1, versions={1: key}, linkage=linkage))
    expected = hmac.digest(linkage, text.encode("utf-8"), hashlib.sha256)[:16].hex()
    assert tokenizer.linkage(text) == expected
    assert tokenizer.linkage(text) == expected


def test_token_known_answer() -> None:
    """A fixed key and value give the token every earlier release wrote (a join across releases)."""
    tokenizer = Tokenizer(TokenKeys(current=3, versions={3: b"k" * 32}, linkage=b"l" * 32))
    assert tokenizer.token("member_id", "W000000001") == _token("t3.", b"k" * 32, "member_id", "W000000001")
    assert tokenizer.linkage("claim\x1fW000000001") == hmac.digest(b"l" * 32, b"claim\x1fW000000001",
                                                                   "sha256")[:16].hex()


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=300))
def test_b64_is_urlsafe_base64_without_padding(data: bytes) -> None:
    assert b64(data) == base64.urlsafe_b64encode(data).rstrip(b"=").decode()
    assert unb64(b64(data)) == data


def test_b64_every_length_and_byte() -> None:
    for n in range(0, 70):
        data = bytes((i * 37 + n) % 256 for i in range(n))
        assert b64(data) == base64.urlsafe_b64encode(data).rstrip(b"=").decode()
    every = bytes(range(256)) * 3
    assert b64(every) == base64.urlsafe_b64encode(every).rstrip(b"=").decode()
