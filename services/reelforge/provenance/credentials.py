"""C2PA Content Credentials for delivered MP4s: sign with a configured certificate chain, read them back.

The manifest says the clip was created by a trained algorithm (IPTC digital source type
trainedAlgorithmicMedia) and carries a `com.reelforge.job` assertion with the model, its weights version,
the job id and the creation time. c2pa hashes the MP4's boxes (c2pa.hash.bmff.v3), so any edit of the
video after signing makes the manifest invalid. Signing is offline: no timestamp authority is called.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import c2pa
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

JOB_ASSERTION = "com.reelforge.job"
AI_GENERATED = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
MP4_MIME = "video/mp4"
# What a reader reports: Trusted (chain ends at a configured anchor), Valid (intact, signer not anchored)
# or Invalid (tampered, or a broken signature).
ACCEPTED_STATES = ("Trusted", "Valid")

DEV_CHAIN_NAME = "c2pa-chain.pem"
DEV_KEY_NAME = "c2pa-key.pem"
DEV_ROOT_NAME = "c2pa-root.pem"


class ProvenanceError(Exception):
    """Signing or reading Content Credentials failed; the message says what to change."""


@dataclass(frozen=True)
class JobClaim:
    job_id: str
    model: str
    model_version: str
    created_at: str  # ISO 8601 UTC, the job's creation time
    generator_version: str  # reelforge's own version


@dataclass
class Verification:
    state: str  # Trusted | Valid | Invalid | NoManifest
    claim: dict[str, Any] | None = None
    generator: str | None = None
    signer: str | None = None
    failures: list[str] = field(default_factory=list)
    trust_required: bool = False  # trust anchors were given: only Trusted is accepted

    @property
    def ok(self) -> bool:
        return self.state == "Trusted" if self.trust_required else self.state in ACCEPTED_STATES


def _alg_for(key: object) -> str:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        algs = {"secp256r1": "es256", "secp384r1": "es384", "secp521r1": "es512"}
        if key.curve.name in algs:
            return algs[key.curve.name]
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "ed25519"
    raise ProvenanceError(
        "the C2PA signing key must be an EC P-256/P-384/P-521 or Ed25519 private key in PEM; "
        f"got {type(key).__name__}")


class ContentSigner:
    """Holds the PEM chain (signing certificate first, then intermediates, no root) and the private key."""

    def __init__(self, chain_path: Path, key_path: Path) -> None:
        try:
            self.chain = chain_path.read_bytes()
            self.key = key_path.read_bytes()
            self.alg = _alg_for(serialization.load_pem_private_key(self.key, password=None))
        except (OSError, ValueError) as exc:
            raise ProvenanceError(f"cannot load the C2PA certificate chain {chain_path} and key {key_path}: {exc}") from exc

    def sign_mp4(self, source: Path, dest: Path, claim: JobClaim) -> None:
        manifest = {
            "claim_generator_info": [{"name": "reelforge", "version": claim.generator_version}],
            "title": f"{claim.job_id}.mp4",
            "format": MP4_MIME,
            "assertions": [
                {"label": "c2pa.actions", "data": {"actions": [{
                    "action": "c2pa.created", "digitalSourceType": AI_GENERATED,
                    "softwareAgent": {"name": claim.model, "version": claim.model_version},
                    "when": claim.created_at,
                }]}},
                {"label": JOB_ASSERTION, "data": dataclasses.asdict(claim)},
            ],
        }
        try:
            signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(self.alg.encode(), self.chain, self.key, None))
            with signer, c2pa.Builder(manifest) as builder, source.open("rb") as src, dest.open("w+b") as dst:
                builder.sign(signer, MP4_MIME, src, dst)
        except c2pa.C2paError as exc:
            raise ProvenanceError(f"C2PA signing failed: {exc}") from exc


def verify(path: Path, trust_anchors: Path | None = None) -> Verification:
    """Read the manifest back and validate it; with trust anchors (PEM), a chain ending at one is Trusted."""
    settings: dict[str, Any] = {"verify": {"verify_trust": trust_anchors is not None}}
    if trust_anchors is not None:
        settings["trust"] = {"trust_anchors": trust_anchors.read_text()}
    try:
        with c2pa.Context.from_dict(settings) as context, path.open("rb") as stream, \
                c2pa.Reader(MP4_MIME, stream, None, context) as reader:
            state = reader.get_validation_state() or "Invalid"
            manifest = reader.get_active_manifest() or {}
            results = reader.get_validation_results() or {}
    except c2pa.C2paError as exc:
        if "ManifestNotFound" in type(exc).__name__ or "not found" in str(exc).lower():
            return Verification(state="NoManifest", trust_required=trust_anchors is not None)
        raise ProvenanceError(f"cannot read Content Credentials from {path}: {exc}") from exc
    claim = next((a["data"] for a in manifest.get("assertions", []) if a.get("label") == JOB_ASSERTION), None)
    generator: dict[str, str] = next(iter(manifest.get("claim_generator_info", [])), {})
    failures = [f"{f['code']}: {f.get('explanation', '')}"
                for f in results.get("activeManifest", {}).get("failure", [])]
    return Verification(state=state, claim=claim, failures=failures, trust_required=trust_anchors is not None,
                        generator=f"{generator.get('name', '?')} {generator.get('version', '')}".strip(),
                        signer=(manifest.get("signature_info") or {}).get("common_name"))


def write_dev_chain(directory: Path, days: int = 365) -> tuple[Path, Path, Path]:
    """A development root CA and an end-entity signing certificate it issued; -> (chain, key, root).

    c2pa refuses self-signed signers and wants, on the signing certificate: v3, CA:false, keyUsage
    digitalSignature (critical), an accepted EKU (emailProtection here; documentSigning also works),
    subject and authority key identifiers. The chain file holds the signer only: the root is the trust
    anchor, never part of the chain.
    """
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = _certificate(_name("reelforge development root CA"), _name("reelforge development root CA"),
                        root_key.public_key(), root_key, now, days * 10, ca=True)
    signer_key = ec.generate_private_key(ec.SECP256R1())
    signer = _certificate(_name("reelforge development signer"), root.subject, signer_key.public_key(),
                          root_key, now, days, ca=False)
    paths = directory / DEV_CHAIN_NAME, directory / DEV_KEY_NAME, directory / DEV_ROOT_NAME
    paths[0].write_bytes(signer.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(signer_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
    paths[1].chmod(0o600)
    paths[2].write_bytes(root.public_bytes(serialization.Encoding.PEM))
    return paths


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "reelforge development"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey,
                 issuer_key: ec.EllipticCurvePrivateKey, now: datetime.datetime, days: int, *,
                 ca: bool) -> x509.Certificate:
    usage = dict.fromkeys(("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
                           "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only"), False)
    usage.update({"key_cert_sign": True, "crl_sign": True} if ca else {"digital_signature": True})
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(issuer).public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
        .add_extension(x509.KeyUsage(**usage), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    if not ca:
        builder = (
            builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                           critical=False)
        )
    return builder.sign(issuer_key, hashes.SHA256())


def to_json(result: Verification) -> str:
    return json.dumps({"state": result.state, "ok": result.ok, "claim": result.claim,
                       "generator": result.generator, "signer": result.signer, "failures": result.failures},
                      indent=2)
