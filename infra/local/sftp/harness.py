"""Keys, credentials and run-unique puller configuration for the local SFTP servers (tests, demo, kill test)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from connectors.secrets import put_secret


@dataclass(frozen=True)
class KeyPair:
    """An OpenSSH private key (text) and its public line."""

    private: str
    public: str

    @classmethod
    def generate(cls) -> KeyPair:
        import asyncssh

        key = asyncssh.generate_private_key("ssh-ed25519")
        return cls(key.export_private_key().decode(), key.export_public_key().decode().strip())

    def write_private(self, path: Path) -> Path:
        path.write_text(self.private)
        path.chmod(0o600)
        return path


def provision_login(secrets_client: Any, secret: str, username: str, client: KeyPair) -> None:
    """Store the puller's login for a feed as its Secrets Manager secret."""
    put_secret(secrets_client, secret, {"username": username, "private_key": client.private})


def sftp_groups(base: Mapping[str, Mapping[str, str]], run_id: str, contracts_dir: Path,
                feeds: Mapping[str, Mapping[str, str]], settle_s: float = 0.0) -> dict[str, dict[str, str]]:
    """`base` groups with a run-unique landing path, quarantine, ledger and the given per-feed properties
    (keys without the feed prefix: host, port, dir, host.key, secret, manifest, ...)."""
    groups: dict[str, dict[str, str]] = copy.deepcopy({k: dict(v) for k, v in base.items()})
    groups["landing"]["path"] = f"s3://medistream-landing/t{run_id}/"
    groups["feeds"]["contracts.dir"] = str(contracts_dir)
    pull = {"feeds": ",".join(feeds), "ledger.table": f"medistream-sftp-ledger-t{run_id}",
            "quarantine.path": f"s3://medistream-landing/t{run_id}-quarantine/", "settle.s": str(settle_s),
            "interval.s": "1"}
    for feed, props in feeds.items():
        pull.update({f"{feed}.{k}": v for k, v in props.items()})
    groups["sftp_pull"] = pull
    return groups


def as_properties(groups: Mapping[str, Mapping[str, str]]) -> list[dict[str, Any]]:
    """Groups in application_properties.json form, for a puller started as its own process."""
    return [{"PropertyGroupId": name, "PropertyMap": dict(props)} for name, props in groups.items()]
