"""The routes of an encoder itself: /embed (any family) and /fill-mask (an MLM head).

fill-mask is recipes/fill_mask.py's `fill_mask`, one text at a time, as `muppets predict
fill-mask` runs it; /embed pools one layer (or the mean of all, ELMo's ScalarMix at s = 0,
gamma = 1, as `muppets extract --layers mean`) over the text's tokens.

Shapes:
    B  texts in a sub-batch    T  tokens of the longest    H  hidden size    L + 1  layers
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from muppets.errors import InputError
from muppets.recipes.extract import elmo_featurizer, select_layers
from muppets.recipes.fill_mask import fill_mask
from muppets.serve.models import RequestError, Route, Work, check_length, sub_batches


def pool(layer: Tensor, mask: Tensor, pooling: str) -> Tensor:
    """(B, T, H) states, (B, T) mask -> (B, H): the first token's ([CLS]) or the mean of the
    real tokens (specials included, as sentence-transformers' mean pooling)."""
    if pooling == "cls":
        return layer[:, 0]
    weights = mask.to(layer.dtype).unsqueeze(-1)  # (B, T, 1)
    return (layer * weights).sum(1) / weights.sum(1).clamp(min=1)


def _embedding(layers: list[Tensor], mask: Tensor, row: int, request) -> list[float]:
    """One text's vector: its layer (or the mean of all), pooled, L2-normalised if asked."""
    if request.layer == "mix":
        chosen = select_layers(layers, mask, "mean")[0]  # (B, T, H)
    else:
        chosen = layers[request.layer]
    vector = pool(chosen[row : row + 1].float(), mask[row : row + 1], request.pooling)[0]
    if request.normalize:
        vector = vector / vector.norm().clamp(min=1e-12)
    return vector.tolist()


class EncoderRoutes:
    """embed (and fill-mask) of a BERT-family encoder, or embed of an ELMo biLM."""

    def __init__(
        self,
        encoder: nn.Module,
        tokenizer,
        positions: int | None,
        max_tokens: int,
        n_layers: int,
        mlm_model: nn.Module | None = None,
        elmo: bool = False,
    ):
        self.encoder, self.tokenizer, self.positions = encoder, tokenizer, positions
        self.max_tokens, self.n_layers = max_tokens, n_layers  # padded tokens a pass; L + 1
        self.mlm_model, self.elmo = mlm_model, elmo

    def routes(self) -> dict[str, Route]:
        routes = {"embed": Route(self.prepare_embed, self.run_embed)}
        if self.mlm_model is not None:
            routes["fill-mask"] = Route(self.prepare_fill_mask, self.run_fill_mask)
        return routes

    # ------------------------------------------------------------------ embed

    def prepare_embed(self, request, truncate: bool) -> Work:
        if request.layer != "mix" and not -self.n_layers <= request.layer < self.n_layers:
            raise RequestError(
                422, "layer", f"{request.layer}: this model has layers 0..{self.n_layers - 1}"
            )
        if self.elmo:
            if request.pooling == "cls":
                raise RequestError(422, "pooling", "cls needs a BERT-family model; use mean")
            tokens = sum(len(t.split()) + 2 for t in request.inputs)
            return Work(
                "embed",
                tokens,
                {"request": request, "ids": None, "cut": [False] * len(request.inputs)},
            )
        ids, cut = [], []
        for n, text in enumerate(request.inputs):
            row = self.tokenizer.encode_pair(text)[0]  # [CLS] ... [SEP]
            cut.append(check_length(len(row), self.positions, f"inputs.{n}", truncate))
            ids.append(row[: self.positions - 1] + [self.tokenizer.sep_id] if cut[-1] else row)
        return Work("embed", sum(map(len, ids)), {"request": request, "ids": ids, "cut": cut})

    def _bert_layers(self, ids: list[list[int]]):
        device = next(self.encoder.parameters()).device
        input_ids = torch.full((len(ids), max(map(len, ids))), self.tokenizer.pad_id)  # (B, T)
        mask = torch.zeros_like(input_ids)
        for b, row in enumerate(ids):
            input_ids[b, : len(row)], mask[b, : len(row)] = torch.tensor(row), 1
        layers = self.encoder.forward_all_layers(
            input_ids.to(device), mask.to(device), torch.zeros_like(input_ids).to(device)
        )
        return layers, mask.bool().to(device)

    def run_embed(self, works: list[Work]) -> list[dict]:
        items = [(w, n) for w in works for n in range(len(w.data["request"].inputs))]
        if self.elmo:
            lengths = [len(w.data["request"].inputs[n].split()) + 2 for w, n in items]
        else:
            lengths = [len(w.data["ids"][n]) for w, n in items]
        vectors: dict[tuple[int, int], list[float]] = {}
        for indices in sub_batches(lengths, self.max_tokens):
            chosen = [items[i] for i in indices]
            if self.elmo:
                texts = [w.data["request"].inputs[n] for w, n in chosen]
                layers, mask, _ = elmo_featurizer(self.encoder)(texts, list(range(len(texts))))
            else:
                layers, mask = self._bert_layers([w.data["ids"][n] for w, n in chosen])
            if not all(torch.isfinite(h).all() for h in layers):
                raise InputError("the model gives outputs that are NaN or infinite")
            for row, (w, n) in enumerate(chosen):
                vectors[id(w), n] = _embedding(layers, mask, row, w.data["request"])
        bodies = []
        for w in works:
            results = [
                {"embedding": vectors[id(w), n], "truncated": cut}
                for n, cut in enumerate(w.data["cut"])
            ]
            bodies.append({"results": results})
        return bodies

    # ------------------------------------------------------------------ fill-mask

    def prepare_fill_mask(self, request, truncate: bool) -> Work:
        mask_token = self.tokenizer.id_to_token(self.tokenizer.mask_id)
        targets = []
        for n, word in enumerate(request.targets or []):
            token = self.tokenizer.token_to_id(word.lower() if self.tokenizer.lowercase else word)
            if token is None:
                raise RequestError(
                    422, f"targets.{n}", f"{word!r} is not a token of the vocabulary"
                )
            targets.append(token)
        tokens = 0
        for n, text in enumerate(request.inputs):
            ids = self.tokenizer.encode_pair(text)[0]
            if self.tokenizer.mask_id not in ids:
                raise RequestError(422, f"inputs.{n}", f"no {mask_token} token in the text")
            if len(ids) > self.positions:  # cutting could drop a mask: refused either way
                message = f"{len(ids)} tokens, more than the model's {self.positions} positions"
                raise RequestError(413, f"inputs.{n}", message)
            tokens += len(ids)
        return Work("fill-mask", tokens, {"request": request, "targets": targets})

    def run_fill_mask(self, works: list[Work]) -> list[dict]:
        bodies = []
        for work in works:
            request, targets = work.data["request"], work.data["targets"]
            top_k = self.tokenizer.vocab_size if targets else request.top_k
            results = []
            for text in request.inputs:
                masks = fill_mask(self.mlm_model, self.tokenizer, text, top_k, self.positions)
                if targets:
                    wanted = {self.tokenizer.id_to_token(t) for t in targets}
                    masks = [[(t, p) for t, p in options if t in wanted] for options in masks]
                shown = [[{"token": t, "probability": p} for t, p in options] for options in masks]
                results.append({"masks": shown})
            bodies.append({"results": results})
        return bodies
