"""Request, response and settings models of the prediction server (pydantic v2).

Limits that depend on the server's settings (text length, image size, batch count) are checked by the app, not
here, so that one set of models serves every configuration; here are only the fixed shapes and types. Request
models forbid unknown fields: a client that sends ``"image": "/etc/passwd"`` gets a 422 naming ``image`` instead of
having the field silently ignored (and the server never treats any string as a path).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

MiB = 1024 * 1024


class ServeSettings(BaseModel):
    """Limits and tuning of one server process. Every limit is enforced with a 4xx that names it.

    Sizes are in bytes, text lengths in characters (Unicode code points).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_body_bytes: int = Field(default=16 * MiB, ge=1024, description="Largest request body (413 above).")
    max_image_bytes: int = Field(
        default=8 * MiB, ge=1, description="Largest encoded image, after base64 decoding."
    )
    max_image_pixels: int = Field(
        default=25_000_000,
        ge=1,
        description="Largest width x height, read from the image header before decoding.",
    )
    max_title_chars: int = Field(default=2_000, ge=1)
    max_description_chars: int = Field(default=20_000, ge=1)
    max_batch: int = Field(default=64, ge=1, description="Most products in one POST /predict/batch.")
    default_top_k: int = Field(default=5, ge=1)
    max_top_k: int = Field(default=20, ge=1, description="Upper bound of the top_k query parameter.")
    bad_image: Literal["reject", "ignore"] = Field(
        default="reject",
        description="'reject': an unusable image is a 422. 'ignore': predict from the text alone and report "
        "the reason in image_error.",
    )
    max_rows_per_call: int = Field(
        default=64,
        ge=1,
        description="Requests waiting while the model is busy are merged into one predictor call of at most "
        "this many rows (no added latency when idle).",
    )
    merge_wait_ms: float = Field(
        default=50.0,
        ge=0,
        description="Under load, wait up to this long (and at most a quarter of the last model call) for the "
        "clients just answered to send their next request, so that they share the next call. Never when idle.",
    )
    max_pending_rows: int = Field(
        default=1024, ge=1, description="Rows queued for the model before 503 'busy'."
    )
    predict_timeout_s: float = Field(
        default=30.0, gt=0, description="Longest wait for the model (504 above)."
    )
    warmup: bool = Field(default=True, description="Run one text and one image prediction at start-up.")


# What the server enforces beyond field types, stated in the schema so that generated clients and contract
# fuzzers agree with it: at least one of title and description holds a non-space character, or an image is sent.
_AT_LEAST_ONE: list[dict[str, Any]] = [
    {"required": ["title"], "properties": {"title": {"type": "string", "pattern": r"\S"}}},
    {"required": ["description"], "properties": {"description": {"type": "string", "pattern": r"\S"}}},
    {"required": ["image_base64"], "properties": {"image_base64": {"type": "string", "minLength": 1}}},
]
IMAGE_FORMAT = "image-base64"
"""OpenAPI ``format`` of ``image_base64``: the standard base64 of an image file the server can decode (JPEG, PNG,
WebP, ...) within ``max_image_bytes`` and ``max_image_pixels``. A string that is not one is a 422."""


def _image_string(schema: dict[str, Any]) -> None:
    for branch in schema.get("anyOf", [schema]):
        if branch.get("type") == "string":
            branch.update(format=IMAGE_FORMAT, contentEncoding="base64", contentMediaType="image/*")


class PredictRequest(BaseModel):
    """One product. At least one of ``title``, ``description`` and ``image_base64`` must be non-empty; ``null``
    counts as empty (the schema's ``anyOf``)."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra=lambda schema: schema.update(anyOf=_AT_LEAST_ONE)
    )

    id: str | None = Field(default=None, max_length=256, description="Echoed back; any string.")
    title: str = Field(
        default="", description="Raw product title (HTML and entities are cleaned by the model)."
    )
    description: str = Field(default="", description="Raw product description.")
    image_base64: str | None = Field(
        default=None,
        description="The encoded image file (JPEG, PNG, WebP, ...) in standard base64, optionally as a "
        "'data:image/...;base64,' URL. Never a path or URL to fetch.",
        json_schema_extra=_image_string,
    )

    @field_validator("title", "description", mode="before")
    @classmethod
    def _null_is_empty(cls, value: Any) -> Any:
        return "" if value is None else value  # catalogs often hold null descriptions


class LabelScore(BaseModel):
    label: str
    probability: float


class PathStep(BaseModel):
    level: str = Field(description="Taxonomy level name, coarse to fine.")
    label: str = Field(description="The predicted leaf's ancestor at this level.")
    probability: float = Field(description="Sum of the probabilities of its leaves, in [0, 1].")


class Prediction(BaseModel):
    """The model's answer for one product."""

    id: str | None
    label: str = Field(description="Most probable class.")
    probability: float = Field(description="Its probability, in [0, 1].")
    confidence: float = Field(
        description="Calibrated probability that the label is right, in [0, 1] (scaled for the modalities that "
        "were available: a product without its photo is scaled as such)."
    )
    decision: Literal["auto", "review"] = Field(
        description="'auto': accepted at the model's target precision; 'review': a person should check it."
    )
    top_k: list[LabelScore] = Field(description="The k most probable classes, most probable first.")
    text_available: bool = Field(description="Whether the text modality was used.")
    image_available: bool = Field(description="Whether the image modality was used.")
    image_error: str | None = Field(
        default=None,
        description="Why no image was used ('no image' when none was sent, or why it was unusable with "
        "bad_image='ignore'); null when it was used.",
    )
    path: list[PathStep] | None = Field(
        default=None,
        description="With a taxonomy: the predicted leaf's path, coarse to fine (the last step is `label`).",
    )
    decided_level: str | None = Field(
        default=None,
        description="With a taxonomy: the deepest level of `path` that meets the model's target precision "
        "(null: none does; send to review).",
    )
    decided_label: str | None = Field(default=None, description="The category decided at `decided_level`.")


class BatchResponse(BaseModel):
    predictions: list[Prediction] = Field(description="One per product, in request order.")


class HealthResponse(BaseModel):
    status: Literal["ok"]
    model: str | None
    uptime_s: float
    version: str


class MetadataResponse(BaseModel):
    classes: list[str]
    n_classes: int
    model: dict[str, Any] = Field(description="The bundle's metadata (names, versions, creation, metrics).")
    limits: dict[str, Any] = Field(description="This server's limits (ServeSettings).")


class ErrorItem(BaseModel):
    loc: list[str | int] = Field(description="Where: e.g. ['body', 'image_base64'] or ['body', 3, 'title'].")
    msg: str
    type: str


class ErrorResponse(BaseModel):
    """Every 4xx/5xx body: ``detail`` is a message, or a list of field errors for 422."""

    detail: str | list[ErrorItem]


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in {
        413: "Request body larger than max_body_bytes.",
        415: "Content-Type is neither JSON nor a form.",
        422: "A field is missing, of the wrong type, too long, or the image is unusable; `loc` says which.",
        503: "Too many rows queued for the model; retry later.",
        504: "The model did not answer within predict_timeout_s.",
    }.items()
}


def state_limits(
    openapi: dict[str, Any],
    s: ServeSettings,
    *,
    predict_path: str = "/predict",
    batch_path: str = "/predict/batch",
) -> None:
    """Write the limits of ``s`` into a generated OpenAPI document (in place): text lengths, the base64 length
    of the largest image, the batch size. Together with the models' own constraints the schema then states what
    the server checks, except what only the data can tell (an image that does not decode: 422)."""
    limits = {
        "title": {"maxLength": s.max_title_chars},
        "description": {"maxLength": s.max_description_chars},
        "image_base64": {"maxLength": 4 * -(-s.max_image_bytes // 3)},
    }
    request = openapi["components"]["schemas"]["PredictRequest"]
    for name, extra in limits.items():
        prop = request["properties"][name]
        for branch in prop.get("anyOf", [prop]):  # ``str | None`` is an anyOf of string and null
            if branch.get("type") == "string":
                branch.update(extra)
    body = openapi["paths"][batch_path]["post"]["requestBody"]["content"]["application/json"]["schema"]
    body.update(minItems=1, maxItems=s.max_batch)
    form = openapi["paths"][predict_path]["post"]["requestBody"]["content"].get("multipart/form-data")
    if form is not None:
        for name in ("title", "description"):
            form["schema"]["properties"][name].update(limits[name])
