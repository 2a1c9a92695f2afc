"""Request bodies of the prediction routes, one pydantic model each.

Strict: a string where a number belongs (or the reverse) is an error, not a conversion, and an
unknown key is an error, so a misspelt option never goes silently unused. Every route takes a
list `inputs` (one request may hold several texts: the batch limit counts them); text limits
(characters, count) are the server's settings, checked after validation (413, not 422).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("empty text")
    return text


Text = Annotated[str, AfterValidator(_not_blank)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class ClassifyRequest(_Request):
    inputs: list[Text] = Field(min_length=1)
    text_pairs: list[Text] | None = None  # pair tasks: the second text of each input

    @model_validator(mode="after")
    def _pairs_match(self):
        if self.text_pairs is not None and len(self.text_pairs) != len(self.inputs):
            raise ValueError(
                f"text_pairs has {len(self.text_pairs)} texts for {len(self.inputs)} inputs"
            )
        return self


class TagRequest(_Request):
    inputs: list[Text] = Field(min_length=1)  # words are split on whitespace


class Question(_Request):
    question: Text
    context: Text


class QARequest(_Request):
    inputs: list[Question] = Field(min_length=1)


class FillMaskRequest(_Request):
    inputs: list[Text] = Field(min_length=1)
    top_k: int = Field(5, ge=1, le=100)
    targets: list[Text] | None = None  # score only these words at each mask


class EmbedRequest(_Request):
    inputs: list[Text] = Field(min_length=1)
    pooling: Literal["cls", "mean"] = "mean"
    normalize: bool = False  # L2: unit vectors, dot product = cosine
    layer: int | Literal["mix"] = -1  # index into [embeddings, layer 1, ..., layer L]; "mix": mean


REQUESTS: dict[str, type[_Request]] = {
    "classify": ClassifyRequest,
    "tag": TagRequest,
    "qa": QARequest,
    "fill-mask": FillMaskRequest,
    "embed": EmbedRequest,
}


def texts_of(route: str, request: _Request) -> list[tuple[str, str]]:
    """(field, text) of every text in a request, for the per-text character limit."""
    if route == "qa":
        return [
            (f"inputs.{n}.{part}", getattr(q, part))
            for n, q in enumerate(request.inputs)
            for part in ("question", "context")
        ]
    found = [(f"inputs.{n}", text) for n, text in enumerate(request.inputs)]
    for name in ("text_pairs", "targets"):
        found += [(f"{name}.{n}", t) for n, t in enumerate(getattr(request, name, None) or [])]
    return found
