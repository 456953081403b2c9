from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from prodcat.bundle import BundleError, load_bundle, load_model, save_bundle
from prodcat.catalog import read_catalog
from prodcat.config import TrainConfig, build_model, load_config
from prodcat.model import TrainedModel
from prodcat.pipeline import train
from prodcat.predict import batch_predict

TINY = {
    "text_models": [{"name": "tfidf"}],
    "image_models": [{"name": "embed:test-tiny"}],
    "n_folds": 3,
    "validation_fraction": 0.2,
    "fusion": {"method": "logistic"},
    "noise": {"enabled": True, "modalities": ["image"], "policy": "top-fraction:0.5"},
}


@pytest.fixture(scope="module")
def catalog(demo_catalog: Path) -> pd.DataFrame:
    return read_catalog(demo_catalog)[0]


@pytest.fixture(scope="module")
def trained(catalog: pd.DataFrame) -> TrainedModel:
    return train(catalog, TrainConfig.model_validate(TINY), progress=False)


def test_training_reports_validation_scores_and_noise(trained: TrainedModel, catalog: pd.DataFrame) -> None:
    m = trained.metrics
    assert m["n_train"] + m["n_validation"] == len(catalog)
    val = m["validation"]
    assert set(val["per_model"]) == {"text:tfidf", "image:embed:test-tiny"}
    assert 0.0 <= val["macro_f1_ci"][0] <= val["macro_f1"] <= val["macro_f1_ci"][1] <= 1.0
    assert set(val["per_modality"]) == {"text", "image", "fusion"}
    # Text and image carry complementary evidence on the synthetic catalog: the learned fusion beats both.
    assert val["macro_f1"] > max(s["macro_f1"] for s in val["per_model"].values()) + 0.05
    assert m["noise"]["image:embed:test-tiny"]["dropped"] > 0


def test_fused_probabilities_are_distributions(trained: TrainedModel, catalog: pd.DataFrame) -> None:
    p = trained.predict_proba(catalog.head(20))
    assert p.shape == (20, 8)
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-6)


def test_bundle_round_trip_gives_identical_predictions(
    trained: TrainedModel, catalog: pd.DataFrame, tmp_path
):
    save_bundle(trained, tmp_path / "m")
    loaded, manifest = load_model(tmp_path / "m")
    assert manifest["classes"] == list(trained.classes)
    np.testing.assert_array_equal(loaded.predict(catalog), trained.predict(catalog))
    np.testing.assert_allclose(loaded.predict_proba(catalog), trained.predict_proba(catalog), atol=1e-12)


def test_tampered_or_incompatible_bundle_is_refused(trained: TrainedModel, tmp_path: Path) -> None:
    out = save_bundle(trained, tmp_path / "m")
    skops_file = out / "model_0.skops"
    data = bytearray(skops_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    skops_file.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"model_0.skops: checksum mismatch"):
        load_model(out)
    out2 = save_bundle(trained, tmp_path / "m2")
    manifest = json.loads((out2 / "manifest.json").read_text())
    manifest["format_version"] = 99
    (out2 / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="newer than this prodcat"):
        load_model(out2)
    (out2 / "fusion.json").unlink()
    with pytest.raises(BundleError):
        load_model(out2)
    with pytest.raises(BundleError, match=r"no manifest\.json"):
        load_model(tmp_path)


def test_predictor_handles_missing_modalities(trained: TrainedModel, tmp_path: Path) -> None:
    predictor = load_bundle(save_bundle(trained, tmp_path / "m"))
    df = pd.DataFrame(
        {
            "id": ["a", "b", "c"],
            "title": ["Mug classique rouge - Lumio", "", "Lumio blue edition 123"],
            "description": ["", "", ""],
            "image": [None, b"not an image at all", None],
        }
    )
    out = predictor.predict_frame(df, top_k=3)
    assert out["id"].tolist() == ["a", "b", "c"]
    assert out["text_available"].tolist() == [True, False, True]
    assert not out["image_available"].any()
    assert out["image_error"].iloc[1] is not None
    assert all(len(t) == 3 and t[0] == lab for t, lab in zip(out["top_labels"], out["label"], strict=True))
    assert out["label"].isin(predictor.classes).all()


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_batch_predict_streams_chunks(trained, catalog, tmp_path: Path, suffix: str) -> None:
    predictor = load_bundle(save_bundle(trained, tmp_path / "m"))
    counts = batch_predict(
        predictor, catalog, tmp_path / f"p{suffix}", chunk_size=50, top_k=2, progress=False
    )
    out = (
        pd.read_csv(tmp_path / f"p{suffix}") if suffix == ".csv" else pd.read_parquet(tmp_path / f"p{suffix}")
    )
    assert counts["rows"] == len(out) == len(catalog)
    assert out["id"].astype(str).tolist() == catalog["id"].tolist()
    assert {"top1_label", "top2_probability", "image_available"} <= set(out.columns)
    assert counts["no_image"] == int((~out["image_available"]).sum()) > 0
    assert not (tmp_path / f"p{suffix}.partial").exists()


def test_config_validation_names_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "c.yaml"
    bad.write_text("n_folds: 1\n")
    with pytest.raises(ValidationError, match="n_folds"):
        load_config(bad)
    bad.write_text("fusion: {methd: mean}\n")
    with pytest.raises(ValidationError, match="methd"):
        load_config(bad)
    assert load_config(None, **{"fusion.method": "logistic"}).fusion.method == "logistic"


def test_config_defaults_are_the_packaged_default_yaml(tmp_path: Path) -> None:
    """Regression: a YAML naming one field used to get paper-mlp fusion and 224 px images for the rest."""
    assert TrainConfig() == load_config(None)
    partial = tmp_path / "c.yaml"
    partial.write_text("noise: {enabled: false}\n")
    cfg = load_config(partial)
    assert not cfg.noise.enabled and cfg.noise.policy == load_config(None).noise.policy
    assert cfg.model_dump(exclude={"noise"}) == load_config(None).model_dump(exclude={"noise"})


def test_builtin_configs_name_registered_models() -> None:
    """Every model a built-in config names builds into a classifier with its configured parameters, and passes
    its own parameter check (the pipeline's check before training)."""
    for name in ("default", "accurate", "paper-gpu"):
        cfg = load_config(name)
        specs = [(s, "text") for s in cfg.text_models] + [(s, "image") for s in cfg.image_models]
        assert specs, name
        for spec, role in specs:
            est = build_model(spec, modality=role, cache_dir=None, seed=0)
            assert callable(est.fit) and callable(est.predict_proba), (name, spec.name)
            params = est.get_params(deep=False)
            for key, value in spec.params.items():
                assert params[key] == value, (name, spec.name, key)
            check = getattr(est, "check_params", None)
            if callable(check) and spec.name.startswith(("embed:", "tfidf")):  # these build offline
                check()


def test_accurate_is_the_default_with_the_native_image_box() -> None:
    """The two built-in CPU configs differ only in the image input size (the benchmark notes compare them)."""
    accurate, default = load_config("accurate"), load_config("default")
    assert accurate.model_dump(exclude={"image_models"}) == default.model_dump(exclude={"image_models"})
    (acc,), (dft,) = accurate.image_models, default.image_models
    assert acc.name == dft.name and acc.params["embedder_params"] == {
        **dft.params["embedder_params"],
        "image_size": 224,
    }


def test_warm_training_reuses_fits_and_gives_the_same_model(
    catalog: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prodcat.fusion.decision import LogisticFusion
    from prodcat.text.models import TfidfTextClassifier

    cfg = TrainConfig.model_validate({**TINY, "cache_dir": str(tmp_path / "cache")})
    cold = train(catalog, cfg, progress=False)
    calls: list[str] = []
    for cls in (TfidfTextClassifier, LogisticFusion):
        original = cls.fit

        def counting(self, *a, _orig=original, **k):  # type: ignore[no-untyped-def]
            calls.append(type(self).__name__)
            return _orig(self, *a, **k)

        monkeypatch.setattr(cls, "fit", counting)
    warm = train(catalog, cfg, progress=False)
    assert calls == []  # OOF folds, refits and the fuser all came from the training cache
    np.testing.assert_allclose(warm.predict_proba(catalog), cold.predict_proba(catalog))
    assert warm.metrics["validation"]["macro_f1"] == cold.metrics["validation"]["macro_f1"]


@pytest.mark.parametrize("refit_full", [False, True])
def test_training_cache_entry_that_is_corrupt_or_unsafe_is_refit(
    catalog: pd.DataFrame, tmp_path: Path, refit_full: bool
) -> None:
    import datetime

    import skops.io as sio

    from prodcat.cache import _atomic_savez, _checksum

    cache = tmp_path / "cache"
    cfg = TrainConfig.model_validate(
        {**TINY, "cache_dir": str(cache), "noise": {"enabled": False}, "refit_full": refit_full}
    )
    cold = train(catalog, cfg, progress=False)
    arrays = cache / "arrays"
    entries = sorted(arrays.glob("fit-*/*.npz")) + sorted(arrays.glob("folds-*/*.npz"))
    # one fitted model per modality model: refit, or (refit_full false, the embedding model) its fold models
    assert [e.parent.name.split("-")[0] for e in entries] == ["fit", "fit" if refit_full else "folds"]
    entries[0].write_bytes(b"not an npz")  # corrupt: discarded with a warning
    # Unsafe: a well-formed, checksummed entry naming a type outside the allow-list must never be loaded.
    with np.load(entries[1]) as z:
        unsafe = {k: z[k] for k in z.files if k not in ("skops", "checksum")}
    unsafe["skops"] = np.frombuffer(sio.dumps(datetime.timedelta(1)), dtype=np.uint8)
    entries[1].unlink()
    _atomic_savez(entries[1], **unsafe, checksum=_checksum(unsafe))
    with pytest.warns(UserWarning, match="corrupt entry"):
        again = train(catalog, cfg, progress=False)
    np.testing.assert_allclose(again.predict_proba(catalog), cold.predict_proba(catalog))
    for e in entries:  # both refit and stored again
        with np.load(e) as z:
            assert b"datetime" not in z["skops"].tobytes()


def test_too_few_products_per_class_names_the_training_part(catalog: pd.DataFrame) -> None:
    """Regression: the message counted products after the validation holdout without saying so ("class 'X'
    has 1 product(s)" for a class the catalog has 2 of)."""
    rare = catalog["label"].iloc[0]
    keep = catalog[catalog["label"] != rare]
    small = pd.concat([keep, catalog[catalog["label"] == rare].head(4)], ignore_index=True)
    config = TrainConfig.model_validate({**TINY, "n_folds": 4})
    with pytest.raises(ValueError) as err:
        train(small, config, progress=False)
    msg = str(err.value)
    assert repr(str(rare)) in msg and "in the training part (4 in the catalog" in msg
    assert "n_folds=4" in msg


def test_predictor_flags_truncated_image_data_from_the_encoder(trained: TrainedModel, tmp_path: Path) -> None:
    """Regression: availability came from a header probe, so an image whose pixel data is cut short was reported
    available although the encoder could not use it (and every good image was opened a second time)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(buf, format="JPEG", quality=95)
    good = buf.getvalue()
    cut = good[: len(good) * 2 // 3]  # header intact, pixel data cut short
    df = pd.DataFrame(
        {"id": ["ok", "cut"], "title": ["Mug rouge", "Mug rouge"], "description": "", "image": [good, cut]}
    )
    out = load_bundle(save_bundle(trained, tmp_path / "m")).predict_frame(df)
    assert out["image_available"].tolist() == [True, False]
    assert pd.isna(out["image_error"].iloc[0])
    assert out["image_error"].iloc[1] == "truncated"


def test_image_status_without_an_encoder_mask_probes_headers(tmp_path: Path) -> None:
    """Image models that report no mask (fine-tuned backbones) fall back to a header probe per image."""
    from PIL import Image

    from prodcat.predict import _image_status

    good = tmp_path / "good.png"
    Image.new("RGB", (8, 8)).save(good)
    (tmp_path / "text.jpg").write_text("not an image")
    items = [str(good), str(tmp_path / "missing.jpg"), str(tmp_path / "text.jpg"), None]
    ok, errors = _image_status(items)
    assert ok.tolist() == [True, False, False, False]
    assert errors == [None, "missing file", "not an image", "no image"]
    # With a mask, usable rows are not opened again: a path that no longer exists stays "available".
    ok, errors = _image_status([str(tmp_path / "gone.jpg")], known_ok=np.array([True]))
    assert ok.tolist() == [True] and errors == [None]


@pytest.mark.parametrize(
    ("name", "role", "params"),
    [
        ("tfidf", "text", {}),
        ("embed:test-tiny", "text", {}),
        ("embed:test-tiny", "image", {"embedder_params": {"aspect": "auto"}}),
    ],
)
def test_every_cheap_model_saves_as_a_compact_archive(
    catalog: pd.DataFrame, name: str, role: str, params: dict
) -> None:
    """Guard for the skops pitfall behind the 11 s tfidf load: a dict of numpy scalars in a fitted estimator is
    written as one array file per value. Archives must not grow with the vocabulary or the catalog."""
    import io
    import zipfile

    from prodcat.config import ModelSpec
    from prodcat.safe_io import dumps_estimator, loads_estimator

    est = build_model(ModelSpec(name=name, params=params), modality=role, cache_dir=None, seed=0)
    est.fit(catalog, catalog["label"])
    data = dumps_estimator(est)
    members = zipfile.ZipFile(io.BytesIO(data)).namelist()
    assert len(members) < 60, f"{name}: {len(members)} archive members"
    loaded = loads_estimator(data)
    np.testing.assert_array_equal(loaded.predict_proba(catalog), est.predict_proba(catalog))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {
                "image_models": [
                    {"name": "embed:test-tiny", "params": {"embedder_params": {"aspekt": "auto"}}}
                ]
            },
            r"image model 'embed:test-tiny': embedder 'test-tiny': .*unexpected keyword argument 'aspekt'",
        ),
        (
            {
                "image_models": [
                    {"name": "embed:test-tiny", "params": {"embedder_params": {"aspect": "wide"}}}
                ]
            },
            r"image model 'embed:test-tiny': aspect must be",
        ),
        (
            {"image_models": [{"name": "embed:test-tiny", "params": {"head_params": {"Cx": 1}}}]},
            r"image model 'embed:test-tiny': head 'auto': Invalid parameter 'Cx'",
        ),
        (
            {"image_models": [{"name": "embed:nope"}]},
            r"image model 'embed:nope': unknown image-embedder 'nope'",
        ),
        ({"text_models": [{"name": "tfidf", "params": {"Cc": 1}}]}, r"text model 'tfidf': .*'Cc'"),
        (
            {"text_models": [{"name": "tfidf", "params": {"C": -1}}]},
            r"text model 'tfidf': The 'C' parameter of TfidfTextClassifier must be a float in the range \(0.0, inf\)",
        ),
        (
            {"text_models": [{"name": "tfidf", "params": {"char_ngram_range": [5, 2]}}]},
            r"text model 'tfidf': char_ngram_range must be \(min_n, max_n\)",
        ),
        ({"fusion": {"method": "meen"}}, r"fusion 'meen': unknown fusion"),
        (
            {"fusion": {"method": "mean", "params": {"pooling": "cubic"}}},
            r"fusion 'mean': The 'pooling' parameter of MeanFusion must be a str among",
        ),
        (
            {"fusion": {"method": "paper-mlp", "params": {"n_layers": 3}}},
            r"fusion 'paper-mlp': The 'n_layers' parameter of PaperMLPFusion must be an int in the range \[1, 2\]",
        ),
        (
            {"fusion": {"method": "mean", "params": {"weights": [1, 2, 3]}}},
            r"fusion 'mean': weights must be 2 numbers \(one per model\)",
        ),
        (
            {"fusion": {"method": "ensemble", "params": {"members": "mean+gbdt[max_iter=0]"}}},
            r"fusion 'ensemble': member '1:gbdt\[max_iter=0\]': The 'max_iter' parameter of GBDTFusion",
        ),
    ],
)
def test_config_errors_fail_before_any_model_is_trained(
    catalog: pd.DataFrame, monkeypatch: pytest.MonkeyPatch, change: dict, message: str
) -> None:
    """Regression: a typo in the image model's parameters raised a bare TypeError (a traceback from the CLI)
    after the text models had been trained."""
    import prodcat.pipeline as pipeline

    calls: list[str] = []
    monkeypatch.setattr(pipeline, "_model_oof", lambda *a, **k: calls.append("oof"))
    with pytest.raises(ValueError, match=message):
        train(catalog, TrainConfig.model_validate({**TINY, **change}), progress=False)
    assert calls == []


def test_fit_time_errors_name_the_model(catalog: pd.DataFrame, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ValueError a model raises only when fitted (after its parameters passed the up-front check) is
    prefixed with the model's name."""
    from prodcat.text.models import TfidfTextClassifier

    def fail(self: Any, *a: Any, **k: Any) -> Any:
        raise ValueError("the solver gave up")

    monkeypatch.setattr(TfidfTextClassifier, "fit", fail)
    with pytest.raises(ValueError, match=r"text model 'tfidf': .*the solver gave up"):
        train(catalog, TrainConfig.model_validate({**TINY, "cache_dir": None}), progress=False)


def test_tfidf_takes_ngram_ranges_from_yaml_lists(catalog: pd.DataFrame) -> None:
    """Regression: a YAML config gives ``word_ngram_range: [1, 3]`` as a list, which scikit-learn's vectorizer
    refused ("must be an instance of 'tuple'") only when the model was fitted."""
    from prodcat.text.models import TfidfTextClassifier

    est = TfidfTextClassifier(word_ngram_range=[1, 3], char_ngram_range=[3, 4])  # type: ignore[arg-type]
    est.check_params()
    est.fit(catalog, catalog["label"])
    assert est.word_.ngram_range == (1, 3) and est.predict(catalog).shape == (len(catalog),)
    TfidfTextClassifier(word_ngram_range=(np.int64(1), np.int64(2))).check_params()  # numpy ints too


def test_too_few_products_for_the_noise_folds_with_a_fusion_holdout(catalog: pd.DataFrame) -> None:
    """Regression: with ``fusion_data: holdout`` the noise audit's folds run on the rows left after the fusion's
    holdout too, which the check did not count (the plain K-fold message came after training had started)."""
    rare = catalog["label"].iloc[0]
    keep = catalog[catalog["label"] != rare]
    small = pd.concat([keep, catalog[catalog["label"] == rare].head(7)], ignore_index=True)
    config = TrainConfig.model_validate(
        {**TINY, "n_folds": 4, "fusion_data": "holdout", "fusion_holdout": 0.5, "validation_fraction": 0.1}
    )
    with pytest.raises(ValueError) as err:
        train(small, config, progress=False)
    msg = str(err.value)
    assert repr(str(rare)) in msg and "held out for validation and for the fusion" in msg
    assert "fusion_holdout" in msg and "(7 in the catalog" in msg


def test_small_catalog_adapts_the_fusion_folds_up_front_and_says_so(tmp_path: Path, capsys) -> None:
    """8 products per class used to train every model and then fail in the fusion ("n_splits=8 cannot be
    greater than the number of members in each class", or gbdt's early-stopping holdout)."""
    from prodcat.commands.model import print_summary
    from prodcat.demo import DemoSpec, make_demo_catalog

    small = read_catalog(make_demo_catalog(tmp_path, DemoSpec(n_per_class=8, image_size=32, seed=3)))[0]
    cfg = TrainConfig.model_validate(
        {
            **TINY,
            "validation_fraction": 0.0,
            "noise": {"enabled": False},
            "fusion": {
                "method": "ensemble",
                "params": {"members": "mean+paper-mlp[epochs=2]+gbdt[max_iter=3]"},
            },
            "cache_dir": None,
        }
    )
    model = train(small, cfg, progress=False)
    notes = model.metrics["fusion_adapted"]
    assert any("n_splits lowered to" in n for n in notes) and any("early stopping off" in n for n in notes)
    folds = list(model.fuser.named_estimators_.values())  # the calibration folds' fusers, voting
    assert len(folds) == cfg.calibration.n_folds
    members = dict(folds[0].named_estimators_)
    mlp = next(m for name, m in members.items() if "paper-mlp" in name)
    assert mlp.n_splits < 8 and len(mlp.predict_proba(np.zeros((1, mlp.n_features_in_)) + 1 / 8)) == 1
    print_summary(model.metrics)
    assert "small catalog, fusion adapted" in capsys.readouterr().out
