"""``prodcat sign MODEL_DIR --key KEY``: sign a model bundle (OpenSSF model-signing, offline).

The signature (``MODEL_DIR/model.sig``) covers every file of the bundle; ``predict``, ``evaluate`` and ``serve``
given ``--verify-key PUB`` refuse a bundle that is unsigned, signed by another key, or changed since. See
docs/security.md for what a signature proves and how to make a key pair.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from prodcat.commands.common import fail


def sign(
    model_dir: Annotated[Path, typer.Argument(help="Model bundle folder written by `prodcat train`.")],
    key: Annotated[Path, typer.Option("--key", help="Elliptic-curve private key (PEM) to sign with.")],
    certificate: Annotated[
        Path | None,
        typer.Option(
            "--certificate", help="Signing certificate (PEM) of KEY: certificate mode instead of key mode."
        ),
    ] = None,
    chain: Annotated[
        list[Path] | None,
        typer.Option(
            "--chain", help="With --certificate: the issuing CA certificate(s) (PEM); repeat for several."
        ),
    ] = None,
    password_env: Annotated[
        str | None,
        typer.Option(
            "--password-env", help="Name of an environment variable holding KEY's password, if encrypted."
        ),
    ] = None,
) -> None:
    """Sign a model bundle: writes MODEL_DIR/model.sig over every file of the bundle."""
    from prodcat.bundle import BundleError, sign_bundle

    password = None
    if password_env is not None:
        password = os.environ.get(password_env)
        if password is None:
            raise fail(f"--password-env: environment variable {password_env} is not set")
    try:
        path = sign_bundle(
            model_dir, key, password=password, certificate=certificate, certificate_chain=chain or []
        )
    except BundleError as e:
        raise fail(str(e)) from None
    typer.echo(f"signed {model_dir}: {path}")
