"""A bundle from elsewhere: hostile copies of a real bundle (checksums rewritten, as anyone can) are refused by
``prodcat predict`` with a one-line error, before any output is written; signatures prove origin."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from prodcat.bundle import BundleError, load_model, read_manifest
from prodcat.cli import app

runner = CliRunner()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _edit_manifest(folder: Path, change: Callable[[dict[str, Any]], None]) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    change(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))


def _swap_model(folder: Path, data: bytes) -> None:
    """Replace model_0.skops with ``data`` and rewrite its checksum, as an attacker with a copy would."""
    (folder / "model_0.skops").write_bytes(data)
    _edit_manifest(folder, lambda m: m["files"].update({"model_0.skops": _sha(folder / "model_0.skops")}))


@pytest.fixture
def bundle(tiny_bundle: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))


def _snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): _sha(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def predict_refused(bundle: Path, catalog: Path, match: str, *extra: str) -> str:
    """Run ``prodcat predict`` and check: exit 2, one error line naming the problem, no output, no change."""
    out = bundle.parent / "predictions.csv"
    before = _snapshot(bundle.parent)
    result = runner.invoke(app, ["predict", str(bundle), str(catalog), "--out", str(out), *extra])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert match in lines[0], lines[0]
    assert not out.exists() and not Path(f"{out}.partial").exists()
    assert _snapshot(bundle.parent) == before  # nothing written, nothing changed
    return lines[0]


def test_the_untouched_bundle_predicts(bundle: Path, demo_catalog: Path) -> None:
    result = runner.invoke(
        app, ["predict", str(bundle), str(demo_catalog), "--out", str(bundle.parent / "p.csv")]
    )
    assert result.exit_code == 0, result.output
    assert (bundle.parent / "p.csv").is_file()


def test_eval_analyzer_in_a_column_transformer(bundle: Path, demo_catalog: Path) -> None:
    import skops.io as sio
    from sklearn.compose import ColumnTransformer
    from sklearn.feature_extraction.text import TfidfVectorizer

    _swap_model(bundle, sio.dumps(ColumnTransformer([("t", TfidfVectorizer(analyzer=eval), "title")])))
    line = predict_refused(bundle, demo_catalog, "model_0.skops: refused type sklearn.compose")
    assert "not on prodcat's allow-list" in line


@pytest.mark.parametrize("where", ["parent", "absolute"])
def test_model_file_outside_the_folder(bundle: Path, demo_catalog: Path, where: str) -> None:
    outside = bundle.parent / "outside.skops"
    shutil.copy(bundle / "model_0.skops", outside)
    name = "../outside.skops" if where == "parent" else str(outside)

    def point_outside(m: dict[str, Any]) -> None:
        m["models"][0]["file"] = name
        m["files"][name] = _sha(outside)

    _edit_manifest(bundle, point_outside)
    predict_refused(bundle, demo_catalog, "must be plain names inside the bundle folder")


def test_model_file_missing_from_the_checksum_list(bundle: Path, demo_catalog: Path) -> None:
    shutil.copy(bundle / "model_1.skops", bundle / "model_0.skops")  # a swapped model...
    _edit_manifest(bundle, lambda m: m["files"].pop("model_0.skops"))  # ...and its checksum dropped
    predict_refused(bundle, demo_catalog, "model_0.skops: not listed in the manifest's files")


def test_pickle_only_type_in_a_model_file(bundle: Path, demo_catalog: Path) -> None:
    import datetime as dt

    import skops.io as sio

    _swap_model(bundle, sio.dumps({"when": dt.datetime(2020, 1, 1)}))
    predict_refused(bundle, demo_catalog, "model_0.skops: refused type datetime.datetime")


def test_zip_bomb_model_file(bundle: Path, demo_catalog: Path) -> None:
    bomb = bundle / "model_0.skops"
    bomb.unlink()
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("schema.json", "{}")
        z.writestr("0.npy", b"\0" * (8 << 20))
    _swap_model(bundle, bomb.read_bytes())
    predict_refused(bundle, demo_catalog, "(a zip bomb?)")


@pytest.mark.parametrize("target", ["model_0.skops", "manifest.json"])
def test_symbolic_links_are_refused(bundle: Path, demo_catalog: Path, target: str) -> None:
    real = bundle.parent / f"real-{target}"
    (bundle / target).rename(real)  # same bytes: the checksum would match
    os.symlink(real, bundle / target)
    predict_refused(bundle, demo_catalog, "a symbolic link")


def test_checksum_mismatch_and_bad_digest(bundle: Path, demo_catalog: Path) -> None:
    with (bundle / "fusion.json").open("a") as f:
        f.write(" ")
    predict_refused(bundle, demo_catalog, "fusion.json: checksum mismatch")
    _edit_manifest(bundle, lambda m: m["files"].update({"fusion.json": "0" * 10}))
    predict_refused(bundle, demo_catalog, "files['fusion.json'] is not a sha256 hex digest")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.pop("classes"), "'classes' is not a list"),
        (lambda m: m.update(models={"file": "model_0.skops"}), "'models' is not a list"),
        (lambda m: m["models"][0].pop("role"), "models[0] has no name or role"),
        (lambda m: m["files"].update({".hidden": "0" * 64}), "files names '.hidden'"),
        (lambda m: m["files"].update({"model.sig": "0" * 64}), "files names 'model.sig'"),
        (lambda m: m.update(config={"n_folds": "many"}), "unreadable fusion or config"),
    ],
)
def test_malformed_manifest_is_one_clear_error(
    bundle: Path, demo_catalog: Path, change: Callable[[dict[str, Any]], Any], message: str
) -> None:
    _edit_manifest(bundle, change)
    predict_refused(bundle, demo_catalog, message)


def test_backbone_fingerprints_are_recorded_and_checked(bundle: Path, demo_catalog: Path) -> None:
    fingerprints = [e["backbone_fingerprint"] for e in read_manifest(bundle)["models"]]
    assert all(fingerprints) and fingerprints[0].startswith("test-tiny")

    def other_backbone(m: dict[str, Any]) -> None:
        m["models"][0]["backbone_fingerprint"] = "test-tiny:64"

    _edit_manifest(bundle, other_backbone)
    predict_refused(bundle, demo_catalog, "backbone fingerprint 'test-tiny:64' at training")


def test_library_versions_follow_their_promises(bundle: Path) -> None:
    from importlib import metadata

    major, minor, *_ = metadata.version("scikit-learn").split(".")
    _edit_manifest(bundle, lambda m: m["versions"].update({"scikit-learn": f"{major}.{minor}.999"}))
    load_model(bundle)  # a patch release loads
    _edit_manifest(bundle, lambda m: m["versions"].update({"scikit-learn": f"{major}.{int(minor) - 1}.0"}))
    with pytest.raises(BundleError, match=r"saved with scikit-learn .* install scikit-learn=="):
        load_model(bundle)


# --- signatures -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two elliptic-curve key pairs (PEM), as `openssl ecparam -genkey` makes them."""
    pytest.importorskip("model_signing")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    folder = tmp_path_factory.mktemp("keys")
    out = {}
    for name in ("ours", "theirs"):
        key = ec.generate_private_key(ec.SECP256R1())
        out[name] = folder / f"{name}.pem"
        out[name].write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        out[f"{name}.pub"] = folder / f"{name}.pub"
        out[f"{name}.pub"].write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
    return out


def _sign(bundle: Path, key: Path) -> None:
    result = runner.invoke(app, ["sign", str(bundle), "--key", str(key)])
    assert result.exit_code == 0, result.output
    assert (bundle / "model.sig").is_file()


def test_signed_bundle_verifies_and_predicts(bundle: Path, demo_catalog: Path, keys: dict[str, Path]) -> None:
    _sign(bundle, keys["ours"])
    out = bundle.parent / "p.csv"
    args = [
        "predict",
        str(bundle),
        str(demo_catalog),
        "--out",
        str(out),
        "--verify-key",
        str(keys["ours.pub"]),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert out.is_file()


def test_unsigned_or_foreign_signature_is_refused(
    bundle: Path, demo_catalog: Path, keys: dict[str, Path]
) -> None:
    verify = ("--verify-key", str(keys["ours.pub"]))
    predict_refused(bundle, demo_catalog, "unsigned bundle (no model.sig)", *verify)
    _sign(bundle, keys["theirs"])
    predict_refused(bundle, demo_catalog, "Key mismatch", *verify)


def test_tampered_signed_bundle_is_refused(bundle: Path, demo_catalog: Path, keys: dict[str, Path]) -> None:
    """Checksums rewritten to match (integrity holds) but the signature no longer does (origin fails)."""
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression

    _sign(bundle, keys["ours"])
    _swap_model(bundle, sio.dumps(LogisticRegression()))
    line = predict_refused(
        bundle, demo_catalog, "signature check failed", "--verify-key", str(keys["ours.pub"])
    )
    assert "manifest.json" in line and "model_0.skops" in line


def test_evaluate_and_serve_check_the_signature(
    bundle: Path, demo_catalog: Path, keys: dict[str, Path]
) -> None:
    verify = ["--verify-key", str(keys["ours.pub"])]
    report = bundle.parent / "report"
    result = runner.invoke(app, ["evaluate", str(bundle), str(demo_catalog), "--out", str(report), *verify])
    assert result.exit_code == 2 and "unsigned bundle" in result.stderr
    assert not report.exists()
    result = runner.invoke(app, ["serve", str(bundle), "--port", "0", *verify])
    assert result.exit_code == 2 and "unsigned bundle" in result.stderr


def test_sign_refuses_an_inconsistent_bundle(bundle: Path, keys: dict[str, Path]) -> None:
    (bundle / "fusion.json").write_text("{}")
    result = runner.invoke(app, ["sign", str(bundle), "--key", str(keys["ours"])])
    assert result.exit_code == 2 and "fusion.json: checksum mismatch" in result.stderr
    assert not (bundle / "model.sig").exists()


def test_resaving_drops_a_stale_signature(tiny_bundle: Path, tmp_path: Path, keys: dict[str, Path]) -> None:
    from prodcat.bundle import save_bundle

    folder = Path(shutil.copytree(tiny_bundle, tmp_path / "b"))
    _sign(folder, keys["ours"])
    model, _ = load_model(folder, verify_key=keys["ours.pub"])
    save_bundle(model, folder)
    assert not (folder / "model.sig").exists()


def test_openssl_made_keys_work(bundle: Path, tmp_path: Path) -> None:
    """The key commands docs/security.md gives."""
    pytest.importorskip("model_signing")
    if shutil.which("openssl") is None:
        pytest.skip("no openssl command")
    key, pub = tmp_path / "key.pem", tmp_path / "key.pub"
    subprocess.run(
        ["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(key)], check=True
    )
    subprocess.run(
        ["openssl", "ec", "-in", str(key), "-pubout", "-out", str(pub)], check=True, capture_output=True
    )
    _sign(bundle, key)
    load_model(bundle, verify_key=pub)


def _certificate(subject: str, key: Any, issuer: tuple[str, Any] | None = None) -> bytes:
    """A PEM certificate for ``key``: a CA when ``issuer`` is None, else a code-signing leaf issued by it."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_name, issuer_key = (name, key) if issuer is None else issuer
    usage = dict.fromkeys(
        ("content_commitment", "key_encipherment", "data_encipherment", "key_agreement", "encipher_only"),
        False,
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]) if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=issuer is not None,
                key_cert_sign=issuer is None,
                crl_sign=issuer is None,
                decipher_only=False,
                **usage,
            ),
            critical=True,
        )
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def test_certificate_mode_signs_and_verifies_offline(
    bundle: Path, demo_catalog: Path, keys: dict[str, Path], tmp_path: Path
) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    def ca(name: str) -> tuple[Path, Any]:
        key = ec.generate_private_key(ec.SECP256R1())
        path = tmp_path / f"{name}.pem"
        path.write_bytes(_certificate(name, key))
        return path, key

    ca_pem, ca_key = ca("prodcat test CA")
    other_ca, _ = ca("another CA")
    signer_key = serialization.load_pem_private_key(keys["ours"].read_bytes(), password=None)
    leaf = tmp_path / "signer.pem"
    leaf.write_bytes(_certificate("catalog team", signer_key, issuer=("prodcat test CA", ca_key)))
    args = ["sign", str(bundle), "--key", str(keys["ours"]), "--certificate", str(leaf)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "needs the issuing CA certificate" in result.stderr
    result = runner.invoke(app, [*args, "--chain", str(ca_pem)])
    assert result.exit_code == 0, result.output
    load_model(bundle, verify_key=ca_pem)
    predict_refused(bundle, demo_catalog, "signature check failed", "--verify-key", str(other_ca))


def test_fine_tuned_text_model_bundles_and_its_base_model_is_checked(
    tiny_bundle: Path, demo_catalog: Path, tmp_path: Path
) -> None:
    """``hf:`` (the paper-gpu text model) saves as arrays, loads from its local base model, and is refused when
    that base model changed."""
    pytest.importorskip("transformers")
    pytest.importorskip("tokenizers")
    import numpy as np

    from prodcat.bundle import save_bundle
    from prodcat.catalog import read_catalog
    from prodcat.registry import create
    from tiny_hf import save_tiny_bert, save_tiny_roberta

    base = save_tiny_bert(tmp_path / "base")
    df = read_catalog(demo_catalog)[0]
    model, _ = load_model(tiny_bundle)
    i = next(k for k, (_, role, _) in enumerate(model.models) if role == "text")
    hf = create("text-model", f"hf:{base}", epochs=1, batch_size=16, threads=1, progress=False)
    model.models[i] = (f"hf:{base}", "text", hf.fit(df, df["label"]))
    folder = save_bundle(model, tmp_path / "bundle")
    entry = read_manifest(folder)["models"][i]
    assert entry["class"] == "HFTextClassifier"
    assert entry["backbone_fingerprint"].startswith("hf-files-sha256:")
    loaded, _ = load_model(folder)
    for got, want in zip(loaded.model_probas(df), model.model_probas(df), strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)

    config = base / "tokenizer_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "do_lower_case": False}))
    with pytest.raises(BundleError, match="backbone fingerprint 'hf-files-sha256:"):
        load_model(folder)
    shutil.rmtree(base)
    save_tiny_roberta(base)  # another architecture: the saved weights do not fit it
    with pytest.raises(BundleError, match="do not fit the model at"):
        load_model(folder)
    shutil.rmtree(base)
    with pytest.raises(BundleError, match=r"model_\d\.skops: cannot load"):
        load_model(folder)
