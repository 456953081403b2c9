"""Request checking: the settings' limits on text and images, form and JSON parsing, predictor frames.

Every failure becomes one :class:`fastapi.exceptions.RequestValidationError` listing all the problems, each with
its ``loc`` (``["body", "image_base64"]``, ``["body", 3, "title"]``), so a client fixes a whole batch at once.
Images are only ever bytes here: base64 text is decoded, uploads are read, and nothing is opened as a path.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import anyio
import pandas as pd
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from prodcat.image.decode import decode_image
from prodcat.serve.schemas import LabelScore, PathStep, Prediction, PredictRequest, ServeSettings

_DATA_URL = re.compile(r"data:[\w.+/-]*(?:;[\w.+=-]+)*;base64,", re.IGNORECASE)
FORM_FIELDS = ("id", "title", "description")
_VALIDATE_DRAFT = 256  # JPEGs are checked at a reduced DCT scale: the whole stream is still read


@dataclass
class Row:
    """One checked product, as the predictor will get it (``image``: bytes or None, never a str)."""

    id: str | None
    title: str
    description: str
    image: bytes | None
    image_error: str | None = None  # set when settings.bad_image == "ignore" dropped the image


def field_error(loc: tuple[str | int, ...], msg: str, kind: str) -> dict[str, Any]:
    return {"loc": list(loc), "msg": msg, "type": kind}


def _b64decode(text: str, limit: int) -> bytes:
    """Standard base64 (optionally a data URL, line breaks allowed) -> bytes; ValueError says what was wrong."""
    match = _DATA_URL.match(text)
    if match:
        text = text[match.end() :]
    if re.search(r"\s", text):
        text = re.sub(r"\s+", "", text)
    if len(text) > 4 * -(-limit // 3):
        raise ValueError(f"image decodes to about {len(text) * 3 // 4} bytes; the limit is {limit} bytes")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"not valid base64 ({exc})") from None


def _check_image(data: bytes | str, settings: ServeSettings) -> tuple[bytes | None, str | None]:
    """The image bytes, or ``(None, reason)``. ``str`` input is base64 text, never a path."""
    limit = settings.max_image_bytes
    try:
        raw = _b64decode(data, limit) if isinstance(data, str) else data
    except ValueError as exc:
        return None, str(exc)
    if len(raw) > limit:
        return None, f"image is larger than the limit of {limit} bytes"
    decoded = decode_image(raw, max_pixels=settings.max_image_pixels, draft=_VALIDATE_DRAFT)
    if decoded.ok:
        return raw, None
    reason = decoded.reason or "unusable"
    if reason.startswith("too large"):
        reason += f" (the limit is {settings.max_image_pixels} pixels)"
    return None, f"not a usable image: {reason}"


class Item(NamedTuple):
    """One product to check: its text fields, its image (base64 text or bytes) and where it sits in the body."""

    fields: PredictRequest
    image: bytes | str | None
    loc: tuple[str | int, ...]
    image_field: str


def _check_item(item: Item, s: ServeSettings) -> tuple[Row | None, list[dict[str, Any]]]:
    """Apply the settings' limits to one type-checked product; returns the row or the errors."""
    errors = []
    title, description = item.fields.title, item.fields.description
    for name, value, limit in (
        ("title", title, s.max_title_chars),
        ("description", description, s.max_description_chars),
    ):
        if len(value) > limit:
            msg = f"{name} has {len(value)} characters; the limit is {limit}"
            errors.append(field_error((*item.loc, name), msg, "string_too_long"))
    raw, reason = (None, None) if item.image in (None, "", b"") else _check_image(item.image, s)
    if reason is not None and s.bad_image == "reject":
        errors.append(field_error((*item.loc, item.image_field), reason, "image_unusable"))
    elif raw is None and not title.strip() and not description.strip():
        msg = "nothing to predict from: title and description are empty and there is no usable image"
        errors.append(field_error(item.loc, msg, "empty_product"))
    return (None, errors) if errors else (Row(item.fields.id, title, description, raw, reason), [])


async def check_items(items: Sequence[Item], s: ServeSettings) -> list[Row]:
    """Check every product (in a worker thread when images must be decoded); one 422 lists all the errors."""

    def check_all() -> tuple[list[Row], list[dict[str, Any]]]:
        rows, errors = [], []
        for item in items:
            row, errs = _check_item(item, s)
            errors += errs
            if row is not None:
                rows.append(row)
        return rows, errors

    has_image = any(item.image not in (None, "", b"") for item in items)
    rows, errors = await anyio.to_thread.run_sync(check_all) if has_image else check_all()
    if errors:
        raise RequestValidationError(errors)
    return rows


def _validation_errors(exc: ValidationError, loc: tuple[str | int, ...] = ("body",)) -> list[dict[str, Any]]:
    return [field_error((*loc, *e["loc"]), e["msg"], e["type"]) for e in exc.errors(include_url=False)]


async def read_form(request: Request, s: ServeSettings) -> Item:
    """A multipart (or urlencoded) form: text fields ``id``, ``title``, ``description`` and a file ``image``.

    A text value sent as ``image`` is refused (422), never read as a path.
    """
    errors: list[dict[str, Any]] = []
    text: dict[str, Any] = {}
    image: bytes | None = None
    part_limit = 4 * max(s.max_title_chars, s.max_description_chars) + 1024  # UTF-8: at most 4 bytes a char
    async with request.form(max_files=1, max_fields=len(FORM_FIELDS) + 1, max_part_size=part_limit) as form:
        for key in dict.fromkeys(form.keys()):
            values = form.getlist(key)
            if len(values) > 1:
                errors.append(
                    field_error(("body", key), f"{key} is given {len(values)} times", "multiple_values")
                )
            elif key != "image":
                value = values[0]
                text[key] = value if isinstance(value, str) else value.filename or "(a file)"
                if key in FORM_FIELDS and isinstance(value, UploadFile):
                    errors.append(
                        field_error(("body", key), f"{key} must be a text field, not a file", "string_type")
                    )
            elif not isinstance(values[0], UploadFile):
                msg = "image must be a file part (multipart upload); a text value is never read as a path"
                errors.append(field_error(("body", key), msg, "image_not_file"))
            else:
                upload = values[0]
                image = await upload.read(s.max_image_bytes + 1)  # one byte over the limit tells "too large"
                if not image and not upload.filename:
                    image = None  # an empty file input, as browsers send it
                elif not image:
                    errors.append(
                        field_error(("body", key), "not a usable image: zero-byte file", "image_unusable")
                    )
    fields = PredictRequest()
    try:
        fields = PredictRequest.model_validate({k: v for k, v in text.items() if k != "image_base64"})
    except ValidationError as exc:
        errors += _validation_errors(exc)
    if "image_base64" in text:
        errors.append(
            field_error(
                ("body", "image_base64"), "send the image as a file part named 'image'", "extra_forbidden"
            )
        )
    if errors:
        raise RequestValidationError(errors)
    return Item(fields, image, ("body",), "image")


async def read_json(request: Request) -> Item:
    """A JSON object with the fields of :class:`PredictRequest`."""
    try:
        fields = PredictRequest.model_validate_json(await request.body())
    except ValidationError as exc:
        raise RequestValidationError(_validation_errors(exc)) from None
    return json_item(fields, ("body",))


def json_item(fields: PredictRequest, loc: tuple[str | int, ...]) -> Item:
    return Item(fields, fields.image_base64, loc, "image_base64")


_OUTPUT_COLUMNS = (
    "label",
    "probability",
    "confidence",
    "decision",
    "top_labels",
    "top_probabilities",
    "text_available",
    "image_available",
    "image_error",
)
_TAXONOMY_COLUMNS = ("path", "decided_level", "decided_label")  # present when the model has a taxonomy


def to_predictions(out: pd.DataFrame, rows: list[Row], top_k: int) -> list[Prediction]:
    """The predictor's output rows (aligned with ``rows``) as response models, ``top_k`` classes each."""
    columns = [out[c].tolist() for c in _OUTPUT_COLUMNS]  # column-wise: far cheaper than to_dict("records")
    taxonomy = [out[c].tolist() if c in out else [None] * len(out) for c in _TAXONOMY_COLUMNS]
    preds = []
    for row, (label, proba, confidence, decision, labels, probas, text_ok, image_ok, error), (
        path,
        level,
        decided,
    ) in zip(rows, zip(*columns, strict=True), zip(*taxonomy, strict=True), strict=True):
        top = zip(list(labels)[:top_k], list(probas)[:top_k], strict=True)
        preds.append(
            Prediction(
                id=row.id,
                label=str(label),
                probability=float(proba),
                confidence=float(confidence),
                decision="auto" if decision == "auto" else "review",
                top_k=[LabelScore(label=str(c), probability=float(p)) for c, p in top],
                text_available=bool(text_ok),
                image_available=bool(image_ok),
                image_error=row.image_error or (error if isinstance(error, str) else None),
                path=None if path is None else [PathStep(**step) for step in path],
                decided_level=level,
                decided_label=decided,
            )
        )
    return preds


def predictor_frame(rows: list[Row]) -> pd.DataFrame:
    """The predictor's input: catalog columns; ``image`` holds bytes or None, never a str."""
    return pd.DataFrame(
        {
            "id": [r.id if r.id is not None else str(i) for i, r in enumerate(rows)],
            "title": [r.title for r in rows],
            "description": [r.description for r in rows],
            "image": [r.image for r in rows],  # bytes and None: an object column
        }
    )
