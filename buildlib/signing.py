"""cosign's formats, written and read without cosign: the key pair `cosign generate-key-pair`
writes, the simple-signing payload and its ECDSA signature, and the manifest of
signatures that `cosign sign --key` pushes under the tag `sha256-<hex>.sig`.

Pure: no registry, no buildah; the only I/O is reading and writing the key files.
`cryptography` and `pynacl` (the `sign` extra) are imported where they are used.

The private key file is a PEM block labelled `ENCRYPTED SIGSTORE PRIVATE KEY` (cosign 2.x;
`ENCRYPTED COSIGN PRIVATE KEY` is read too) whose body is the JSON of
go-securesystemslib's `encrypted` package: scrypt derives a 32-byte key from the password,
nacl/secretbox seals the key's PKCS#8 DER with it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ec import (
        EllipticCurvePrivateKey,
        EllipticCurvePublicKey,
    )

PRIVATE_KEY_FILE = "cosign.key"
PUBLIC_KEY_FILE = "cosign.pub"
PASSWORD_VARIABLE = "COSIGN_PASSWORD"
# The private key's PEM itself, as cosign's own workflows pass it from a CI secret: when
# set, it is used instead of the key file (nothing written to the checkout).
PRIVATE_KEY_VARIABLE = "COSIGN_PRIVATE_KEY"
PRIVATE_LABEL = "ENCRYPTED SIGSTORE PRIVATE KEY"  # what cosign 2.x writes
PRIVATE_LABELS = (PRIVATE_LABEL, "ENCRYPTED COSIGN PRIVATE KEY")
# The scrypt cost we write (go-securesystemslib's "legacy", read by every cosign) and the
# costs cosign reads (legacy, standard, OWASP); r and p are always 8 and 1.
SCRYPT_N = 32768
SCRYPT_NS = (32768, 65536, 131072)
SCRYPT_R, SCRYPT_P = 8, 1
SALT_BYTES = 32

SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
SIMPLE_SIGNING_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_TYPE = "cosign container image signature"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"


class SigningError(Exception):
    """A key that cannot be read or written, or a signature that cannot be made."""


@dataclass(frozen=True)
class KeyPair:
    """A key pair as cosign stores it: the encrypted private PEM and the public PEM."""

    private_pem: bytes
    public_pem: bytes


def password(environ: Mapping[str, str] | None = None) -> bytes:
    """The key's password, from COSIGN_PASSWORD as cosign reads it (set but empty is an
    empty password, as in cosign); SigningError when it is not set."""
    environ = os.environ if environ is None else environ
    if PASSWORD_VARIABLE not in environ:
        raise SigningError(f"{PASSWORD_VARIABLE} is not set: export the password of the "
                           f"signing key as {PASSWORD_VARIABLE} (cosign reads the same "
                           "variable)")
    return environ[PASSWORD_VARIABLE].encode()


def generate(secret: bytes) -> KeyPair:
    """A new ECDSA P-256 key pair, the private half sealed with `secret`."""
    from cryptography.hazmat.primitives.asymmetric import ec

    private_key = ec.generate_private_key(ec.SECP256R1())
    return KeyPair(seal(private_key, secret), public_pem(private_key.public_key()))


def write_pair(folder: Path, secret: bytes) -> tuple[Path, Path]:
    """Write a new cosign.key and cosign.pub into `folder`; refuse (SigningError) when
    either exists, so a key in use is never lost."""
    private_path, public_path = folder / PRIVATE_KEY_FILE, folder / PUBLIC_KEY_FILE
    existing = [str(p) for p in (private_path, public_path) if p.exists()]
    if existing:
        raise SigningError(f"{' and '.join(existing)} already exist: imagebake keygen does "
                           "not overwrite a key; move them away first to make a new pair")
    pair = generate(secret)
    descriptor = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as private_file:
        private_file.write(pair.private_pem)
    public_path.write_bytes(pair.public_pem)
    return private_path, public_path


def read_private(path: Path, environ: Mapping[str, str] | None = None) -> EllipticCurvePrivateKey:
    """The signing key in the file `path`, opened with COSIGN_PASSWORD."""
    return load_private(_read(path), password(environ), str(path))


def signing_key(path: Path, environ: Mapping[str, str] | None = None) -> EllipticCurvePrivateKey:
    """The signing key: COSIGN_PRIVATE_KEY's PEM when it is set, else the file `path`;
    opened with COSIGN_PASSWORD."""
    environ = os.environ if environ is None else environ
    if environ.get(PRIVATE_KEY_VARIABLE):
        return load_private(environ[PRIVATE_KEY_VARIABLE].encode(), password(environ),
                            PRIVATE_KEY_VARIABLE)
    return read_private(path, environ)


def read_public(path: Path) -> EllipticCurvePublicKey:
    """The public key in the file `path` (a cosign.pub)."""
    return load_public(_read(path), str(path))


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise SigningError(f"cannot read {path}: {err.strerror or err}") from None


def seal(private_key: EllipticCurvePrivateKey, secret: bytes) -> bytes:
    """The private key as cosign's encrypted PEM."""
    import nacl.secret
    import nacl.utils
    from cryptography.hazmat.primitives import serialization

    der = private_key.private_bytes(serialization.Encoding.DER,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    salt = nacl.utils.random(SALT_BYTES)
    nonce = nacl.utils.random(nacl.secret.SecretBox.NONCE_SIZE)
    box = nacl.secret.SecretBox(_derive(secret, salt, SCRYPT_N))
    body = {
        "kdf": {"name": "scrypt", "params": {"N": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P},
                "salt": _b64(salt)},
        "cipher": {"name": "nacl/secretbox", "nonce": _b64(nonce)},
        "ciphertext": _b64(box.encrypt(der, nonce).ciphertext),
    }
    return _pem(PRIVATE_LABEL, json.dumps(body, separators=(",", ":")).encode())


def load_private(pem: bytes, secret: bytes, where: str = "the key") -> EllipticCurvePrivateKey:
    """The ECDSA P-256 private key in cosign's encrypted PEM (either label).
    SigningError, naming `where`, when it is not such a file or the password is wrong."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    der = _unseal(_unpem(pem, PRIVATE_LABELS, where), secret, where)
    try:
        key = serialization.load_der_private_key(der, password=None)
    except ValueError as err:
        raise SigningError(f"{where} does not hold a PKCS#8 private key: {err}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise SigningError(f"{where} holds a {type(key).__name__}, not an ECDSA P-256 key "
                           "(the kind cosign generate-key-pair makes)")
    return key


def _unseal(body: bytes, secret: bytes, where: str) -> bytes:
    """The plaintext of go-securesystemslib's encrypted JSON, as its Decrypt checks it."""
    import nacl.exceptions
    import nacl.secret

    try:
        document = json.loads(body)
        kdf, cipher = document["kdf"], document["cipher"]
        params = kdf["params"]
        salt, nonce = base64.b64decode(kdf["salt"]), base64.b64decode(cipher["nonce"])
        ciphertext = base64.b64decode(document["ciphertext"])
    except (ValueError, KeyError, TypeError) as err:
        raise SigningError(f"{where} is not a cosign private key: {err}") from None
    if kdf.get("name") != "scrypt" or cipher.get("name") != "nacl/secretbox":
        raise SigningError(f"{where}: unknown kdf {kdf.get('name')!r} or cipher "
                           f"{cipher.get('name')!r} (cosign writes scrypt, nacl/secretbox)")
    if (params.get("N") not in SCRYPT_NS or params.get("r") != SCRYPT_R
            or params.get("p") != SCRYPT_P):
        raise SigningError(f"{where}: unsupported scrypt parameters {params}")
    try:
        return nacl.secret.SecretBox(_derive(secret, salt, params["N"])).decrypt(ciphertext,
                                                                                 nonce)
    except (nacl.exceptions.CryptoError, ValueError):
        raise SigningError(f"{where}: wrong password (from {PASSWORD_VARIABLE})") from None


def load_public(pem: bytes, where: str = "the public key") -> EllipticCurvePublicKey:
    """The ECDSA P-256 public key of a cosign.pub."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError as err:
        raise SigningError(f"{where} is not a PEM public key: {err}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise SigningError(f"{where} is not an ECDSA P-256 public key")
    return key


def public_pem(key: EllipticCurvePublicKey) -> bytes:
    """The public key as cosign.pub holds it (PEM `PUBLIC KEY`, SubjectPublicKeyInfo)."""
    from cryptography.hazmat.primitives import serialization

    return key.public_bytes(serialization.Encoding.PEM,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def payload(docker_reference: str, digest: str) -> bytes:
    """The simple-signing payload cosign signs for the image `digest` in the repository
    `docker_reference` (registry/path, no tag)."""
    document = {"critical": {"identity": {"docker-reference": docker_reference},
                             "image": {"docker-manifest-digest": digest},
                             "type": SIGNATURE_TYPE},
                "optional": None}
    return json.dumps(document, separators=(",", ":")).encode()


def sign(key: EllipticCurvePrivateKey, message: bytes) -> str:
    """The base64 of the ASN.1 DER ECDSA P-256/SHA-256 signature of `message`, as cosign
    writes it into the signature annotation."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    return _b64(key.sign(message, ec.ECDSA(hashes.SHA256())))


def verify(key: EllipticCurvePublicKey, message: bytes, signature: str) -> bool:
    """Whether `signature` (base64 DER) is `key`'s signature of `message`."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key.verify(base64.b64decode(signature, validate=True), message,
                   ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True


def signed_digest(message: bytes, docker_reference: str) -> str | None:
    """The image digest a simple-signing payload vouches for, when it is one, of cosign's
    type, for this repository; else None."""
    try:
        critical = json.loads(message)["critical"]
        digest = critical["image"]["docker-manifest-digest"]
        named = critical["identity"]["docker-reference"]
        kind = critical["type"]
    except (ValueError, KeyError, TypeError):
        return None
    fits = kind == SIGNATURE_TYPE and named == docker_reference and isinstance(digest, str)
    return digest if fits else None


def signature_tag(digest: str) -> str:
    """The tag cosign puts the signatures of `digest` under: `sha256-<hex>.sig`."""
    return _tag(digest, "sig")


def attestation_tag(digest: str) -> str:
    """The tag cosign puts the attestations of `digest` under: `sha256-<hex>.att`."""
    return _tag(digest, "att")


@dataclass(frozen=True)
class Layer:
    """One blob of a signature manifest: its bytes, media type and annotations."""

    data: bytes
    media_type: str
    annotations: Mapping[str, str] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.data).hexdigest()

    def descriptor(self) -> dict[str, Any]:
        """How the manifest names it."""
        return {**_descriptor(self.media_type, self.data),
                "annotations": dict(self.annotations)}


@dataclass(frozen=True)
class Artifact:
    """A manifest of signatures or attestations and the blobs it names, ready to push."""

    manifest: bytes
    config: bytes
    layers: tuple[Layer, ...]

    @property
    def blobs(self) -> dict[str, bytes]:
        """Every blob the manifest names, by digest."""
        config_digest = "sha256:" + hashlib.sha256(self.config).hexdigest()
        return {config_digest: self.config, **{layer.digest: layer.data
                                               for layer in self.layers}}


def signature_layer(message: bytes, signature: str) -> Layer:
    """The layer `cosign sign` writes: the payload, its signature in the annotation."""
    return Layer(message, SIMPLE_SIGNING_TYPE, {SIGNATURE_ANNOTATION: signature})


def artifact(layers: Sequence[Layer]) -> Artifact:
    """The OCI manifest cosign pushes for these layers, with the config go-containerregistry
    gives an image of uncompressed layers (created at the zero time, as cosign leaves it)."""
    config = json.dumps({
        "architecture": "", "created": "0001-01-01T00:00:00Z", "os": "", "config": {},
        "history": [{"created": "0001-01-01T00:00:00Z"} for _ in layers],
        "rootfs": {"type": "layers", "diff_ids": [layer.digest for layer in layers]},
    }, separators=(",", ":")).encode()
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": _descriptor(OCI_CONFIG, config),
        "layers": [layer.descriptor() for layer in layers],
    }, separators=(",", ":")).encode()
    return Artifact(manifest, config, tuple(layers))


def layers_of(manifest: bytes) -> list[dict[str, Any]]:
    """The layer descriptors of a signature manifest ([] when it is not one)."""
    try:
        layers = json.loads(manifest).get("layers")
    except (ValueError, AttributeError):
        return []
    return [layer for layer in layers or [] if isinstance(layer, dict)]


def _descriptor(media_type: str, data: bytes) -> dict[str, Any]:
    return {"mediaType": media_type, "size": len(data),
            "digest": "sha256:" + hashlib.sha256(data).hexdigest()}


def _tag(digest: str, suffix: str) -> str:
    algorithm, _, hexdigest = digest.partition(":")
    if algorithm != "sha256" or len(hexdigest) != 64:
        raise SigningError(f"{digest!r} is not a sha256 manifest digest")
    return f"sha256-{hexdigest}.{suffix}"


def _derive(secret: bytes, salt: bytes, cost: int) -> bytes:
    return hashlib.scrypt(secret, salt=salt, n=cost, r=SCRYPT_R, p=SCRYPT_P,
                          maxmem=256 * SCRYPT_R * cost, dklen=32)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _pem(label: str, body: bytes) -> bytes:
    text = base64.b64encode(body).decode()
    lines = [text[i:i + 64] for i in range(0, len(text), 64)]
    return "\n".join([f"-----BEGIN {label}-----", *lines, f"-----END {label}-----", ""]).encode()


def _unpem(pem: bytes, labels: Sequence[str], where: str) -> bytes:
    text = pem.decode("ascii", errors="replace").strip().splitlines()
    if len(text) < 2:
        raise SigningError(f"{where} is not a PEM file")
    begin, end = text[0].strip(), text[-1].strip()
    for label in labels:
        if begin == f"-----BEGIN {label}-----" and end == f"-----END {label}-----":
            try:
                return base64.b64decode("".join(line.strip() for line in text[1:-1]),
                                        validate=True)
            except ValueError:
                raise SigningError(f"{where}: the PEM body is not base64") from None
    raise SigningError(f"{where} is not a cosign private key (the PEM label is "
                       f"{begin!r}; cosign writes {PRIVATE_LABEL!r})")
