"""Request and response shapes, for the OpenAPI document at /docs.

Requests are parsed by hand (`bench.service.inputs`) so every malformed body gets a precise 4xx; these models
describe the contract and validate what the routes return.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class SentimentRequest(BaseModel):
    """One text to classify."""

    text: str = Field(min_length=1, description="Up to max_text_chars characters (default 2000); "
                                                "beyond 512 tokens the model sees the first 512")


class BatchRequest(BaseModel):
    """Several texts to classify in one call."""

    texts: list[str] = Field(min_length=1, description="1..max_batch_items texts (default 64)")


class SentimentResult(BaseModel):
    """One answer, as in the article plus `label_id`, `truncated` and `cached`."""

    text: str
    label: str = Field(description="id2label of the model's config.json (any number of labels)")
    label_id: int
    score: float = Field(ge=0, le=1, description="softmax probability of `label` (sigmoid for a multi-label "
                                                 "model), 4 decimals")
    inference_time_ms: float = Field(description="tokenise + model time of the batch; 0 when cached")
    truncated: bool = Field(description="the text was longer than 512 tokens and was cut to 512")
    cached: bool


class BatchResult(BaseModel):
    """Answers in the order the texts were sent."""

    results: list[SentimentResult]


class Embedding(BaseModel):
    """One text's vector (pooled and normalised as the model's sentence-transformers config says)."""

    text: str
    embedding: list[float]
    dim: int
    inference_time_ms: float = Field(description="tokenise + model time of the batch; 0 when cached")
    truncated: bool = Field(description="the text was longer than the model's max length and was cut")
    cached: bool


class EmbedResult(BaseModel):
    """Vectors in the order the texts were sent."""

    results: list[Embedding]


class ErrorBody(BaseModel):
    """Every error: what is wrong, and details where they help."""

    error: str
    detail: Any = None


ERROR_RESPONSES: dict = {code: {"model": ErrorBody, "description": why} for code, why in (
    (400, "body empty, not UTF-8 or not JSON"), (413, "body over max_body_bytes"),
    (415, "Content-Type is not application/json"), (422, "JSON of the wrong shape"),
    (404, "the route is for the other task (classifier / embedding model)"),
    (500, "the model failed for this batch"), (503, "loading, queue full, or queue deadline passed"),
    (504, "the model call ran past inference_timeout_s"))}


def request_body(model: type[BaseModel]) -> dict:
    """openapi_extra documenting a JSON body that the route reads itself."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}}}
