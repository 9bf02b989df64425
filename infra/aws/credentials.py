"""The credentials stack: every Secrets Manager secret the pipeline reads, under the credentials key.

Generated from what the code reads, never listed by hand: each partner contract's `auth.secret_id`
(schemas/partners), each pulled feed's `<feed>.secret` (groups rest_pull and sftp_pull as the services run them in
AWS: config.service_groups), the ingest
API's key digests, the Snowflake loader's private key and the PHI token keys (conf/). Names carry the
environment (`medistream-<env>/...`, config.Names.secret). A secret is created holding a random
placeholder that no reader accepts (each checks its JSON fields and fails naming the secret, never a
value) until an operator puts the real value; the roles that read it are named in infra/aws/access.py.

Rotation: none of these can be rotated by AWS alone, and a Lambda pretending to would be a stub; each
secret says in ROTATION how it is rotated, and that is its acknowledgement of the rotation findings.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import RemovalPolicy, Stack
from aws_cdk import aws_kms as kms
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from infra.aws.acknowledgements import acknowledge, for_packs
from infra.aws.config import Names, base_groups, pulled_feeds, service_groups

ROTATION = {
    "partner": "issued by the partner (OAuth client credentials or HMAC key): a new value comes from the partner's "
               "portal and is put by the onboarding runbook; the delivery job reads it again on an auth failure",
    "feed": "issued by the sender for its own SFTP server or API: rotated with the sender, put by an operator; the "
            "puller reads it on each connection",
    "ingest_api": "holds only SHA-256 digests of the senders' API keys; a key is rotated by `medistream ingest-api "
                  "add-key` then `revoke-key` once the sender has switched (both valid meanwhile): only the sender can "
                  "take the new key, so no function can finish a rotation",
    "snowflake": "a Snowflake key pair: rotation sets RSA_PUBLIC_KEY_2 on the Snowflake user (an admin action in the "
                 "Snowflake account, outside AWS), then moves the secret; a function doing it would hold broader "
                 "Snowflake rights than the key it rotates",
    "token_keys": "the PHI token keys are rotated by `medistream keys rotate-tokens` (a new version becomes current, "
                  "held versions still verify; audited, by a named person), not by replacing the value",
}


@dataclass(frozen=True)
class SecretSpec:
    """One secret: its id as the code names it (medistream/...), its kind (a ROTATION key), what it holds."""

    secret_id: str
    kind: str
    holds: str


def secret_specs(groups: dict[str, dict[str, str]] | None = None) -> tuple[SecretSpec, ...]:
    """Every secret the code reads, from the partner contracts and the property groups."""
    from schemas.partner_contract import PARTNERS_DIR, granted_reveal_fields, load_partner_contract
    from schemas.phi_access import load_access

    g = base_groups() if groups is None else groups
    rules = load_access()
    specs = [SecretSpec(load_partner_contract(path, granted_reveal_fields(rules, path.stem)).auth.secret_id, "partner",
                        f"partner {path.stem}'s credentials") for path in sorted(PARTNERS_DIR.glob("*.yaml"))]
    services = service_groups(g)  # the pulled feeds as the services run them in AWS (service_overlay.json)
    for group in ("rest_pull", "sftp_pull"):
        specs += [SecretSpec(services[group][f"{feed}.secret"], "feed", f"{group} feed {feed}'s credentials")
                  for feed in pulled_feeds(group, g)]
    specs += [SecretSpec(g["ingest_api"]["keys.secret"], "ingest_api", "the ingest API's key digests per feed"),
              SecretSpec(g["snowflake"]["private.key.secret"], "snowflake", "the Snowflake loader's private key"),
              SecretSpec(g["phi"]["token.secret"], "token_keys", "the PHI token keys (HMAC), by version")]
    return tuple(specs)


class CredentialsStack(Stack):
    """The secrets of one environment, encrypted with its credentials key and retained on delete."""

    def __init__(self, scope: Construct, construct_id: str, *, names: Names, key: kms.IKey,
                 **kwargs: object) -> None:
        super().__init__(scope, construct_id, **kwargs)  # type: ignore[arg-type]
        # Imported by ARN: given the key itself, the Secret construct would add a statement letting the whole
        # account decrypt through Secrets Manager to the key's policy; the key policy names the readers instead.
        key = kms.Key.from_key_arn(self, "credentials-key", key.key_arn)
        self.secrets: dict[str, secretsmanager.Secret] = {}
        for spec in secret_specs():
            name = names.secret(spec.secret_id)
            secret = secretsmanager.Secret(
                self, spec.secret_id.removeprefix("medistream/").replace("/", "-"), secret_name=name,
                description=f"medistream {names.env}: {spec.holds} (placeholder until an operator puts it)",
                encryption_key=key, removal_policy=RemovalPolicy.RETAIN,
                generate_secret_string=secretsmanager.SecretStringGenerator(password_length=32))
            acknowledge(secret, "AwsSolutions-SMG4", ROTATION[spec.kind])
            for_packs(secret, "SecretsManagerRotationEnabled", ROTATION[spec.kind])
            self.secrets[spec.secret_id] = secret
