"""Sign a model bundle and verify it before loading, with the OpenSSF ``model-signing`` package (offline).

Checksums in ``manifest.json`` prove integrity only (anyone who can rewrite a file can rewrite its checksum);
a signature proves origin: the bundle's files are exactly those signed with the private key whose public key (or
certificate chain) the loader was given. ``prodcat sign`` writes ``model.sig`` inside the bundle folder; it
covers every other file of the folder, so a file added, removed or changed after signing is refused.

Two modes of the library's public API, both without any network access:

- **private key**: an elliptic-curve key pair (PEM), e.g.
  ``openssl ecparam -name prime256v1 -genkey -noout -out key.pem`` and
  ``openssl ec -in key.pem -pubout -out key.pub``; sign with the private key, verify with the public one.
- **certificate**: the same private key plus its signing certificate and the issuing CA certificate(s); verify
  against the CA certificate(s) the loader trusts (the same ``--verify-key`` option: a PEM file holding
  certificates selects this mode).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prodcat.safe_io import one_line

# The signature file inside the signed folder (the model-signing default name); not itself signed.
SIGNATURE_FILE = "model.sig"


class SignatureError(RuntimeError):
    """A folder cannot be signed, or its signature is missing, foreign or does not match; the message says why."""


def _library() -> Any:
    try:
        import model_signing
    except ImportError:
        raise SignatureError(
            "signing needs the OpenSSF model-signing package: pip install 'prodcat[sign]'"
        ) from None
    return model_signing


def _hashing(ms: Any) -> Any:
    # Every file of the folder but the signature itself, .git* included: nothing unsigned is ever present.
    return (
        ms.hashing.Config()
        .use_file_serialization(hashing_algorithm="sha256", allow_symlinks=False)
        .set_ignored_paths(paths=[SIGNATURE_FILE], ignore_git_paths=False)
    )


def _existing(path: str | Path, what: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise SignatureError(f"{p}: {what} not found")
    return p


def sign_folder(
    folder: str | Path,
    private_key: str | Path,
    *,
    password: str | None = None,
    certificate: str | Path | None = None,
    certificate_chain: Sequence[str | Path] = (),
) -> Path:
    """Sign every file of ``folder`` with ``private_key`` (EC, PEM); with ``certificate`` (PEM, plus its
    ``certificate_chain``) the signature carries the certificate. Returns the path of the signature written
    (``folder/model.sig``). Callers check the folder's content first (:func:`prodcat.bundle.sign_bundle`)."""
    ms = _library()
    folder = Path(folder)
    key = _existing(private_key, "private key")
    config = ms.signing.Config().set_hashing_config(_hashing(ms))
    try:
        if certificate is None:
            config.use_elliptic_key_signer(private_key=key, password=password)
        elif not certificate_chain:  # model-signing 1.1 cannot read an empty chain
            raise SignatureError(
                "certificate mode needs the issuing CA certificate(s) too (--chain CA.pem, repeatable)"
            )
        else:
            chain = [_existing(c, "certificate") for c in certificate_chain]
            config.use_certificate_signer(
                private_key=key,
                signing_certificate=_existing(certificate, "certificate"),
                certificate_chain=chain,
            )
        (folder / SIGNATURE_FILE).unlink(missing_ok=True)
        config.sign(folder, folder / SIGNATURE_FILE)
    except SignatureError:
        raise
    except Exception as e:  # the library raises ValueError/TypeError for keys it cannot use, OSError...
        raise SignatureError(f"{folder}: cannot sign ({one_line(e)})") from None
    return folder / SIGNATURE_FILE


def verify_folder(folder: str | Path, trusted: str | Path) -> None:
    """Raise :class:`SignatureError` unless ``folder`` carries a signature over exactly its files, made by the
    private key of ``trusted`` (a public key PEM) or, when ``trusted`` holds certificates (PEM), by a signing
    certificate that chains to them."""
    ms = _library()
    folder = Path(folder)
    signature = folder / SIGNATURE_FILE
    if not signature.is_file() or signature.is_symlink():
        raise SignatureError(
            f"{folder}: unsigned bundle (no {SIGNATURE_FILE}); refused since a key was given"
        )
    trusted = _existing(trusted, "public key or certificate")
    config = ms.verifying.Config().set_hashing_config(_hashing(ms))
    if b"-----BEGIN CERTIFICATE-----" in trusted.read_bytes():
        config.use_certificate_verifier(certificate_chain=[trusted])
    else:
        config.use_elliptic_key_verifier(public_key=trusted)
    try:
        config.verify(folder, signature)
    except Exception as e:  # ValueError on mismatch; cryptography and protobuf errors on a forged file
        raise SignatureError(f"{folder}: signature check failed: {_mismatch(e) or one_line(e)}") from None


def _mismatch(e: BaseException) -> str | None:
    """Which files differ from the signed ones, from the library's "Signature mismatch" report."""
    text = str(e)
    if not text.startswith("Signature mismatch"):
        return None
    parts = []
    changed = re.findall(r"Hash mismatch for \\?'([^'\\]+)\\?'", text)  # quotes escaped in the list's repr
    if changed:
        parts.append(f"changed since signing: {', '.join(changed)}")
    for kind, label in (("Extra", "added"), ("Missing", "removed")):
        found = re.search(
            rf"{kind} files found in model '[^']*': ([^\]\"']+)|{kind} files in model '[^']*': ([^\]\"']+)",
            text,
        )
        if found:
            parts.append(f"{label} since signing: {found.group(1) or found.group(2)}")
    return "; ".join(parts) or None
