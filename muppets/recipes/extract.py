"""`muppets extract`: per-token features of any encoder, written as arrays.

The feature-based use of a pretrained encoder (Peters et al. 2018 section 3.3; AllenNLP's
`allennlp elmo` command; google-research/bert's extract_features.py), for ELMo and BERT-family
checkpoints alike through the encoder protocol's forward_all_layers.

Input: a UTF-8 text file, one text per line; every line gets an entry, an empty one too.
- ELMo: the line's words by the pretraining tokenizer (data/streams.py tokenize_words), or split
  on whitespace with --whitespace-tokens (for text tokenized already). The biLM runs on
  <S> words </S> as in training; the boundaries are removed from the output, as AllenNLP does.
- BERT family: the tokenizer's pieces with [CLS] and [SEP], which stay (as extract_features.py).
  A line longer than the model's positions is an error naming FILE:LINE.

--layers: all = (L + 1, T, D): ELMo's [x; x] and every biLSTM layer, or BERT's embeddings and
every Transformer layer; mean = (1, T, D): a ScalarMix with s = 0 and gamma = 1, which is the plain
mean of all the layers; top = (1, T, D): the last layer.

Output, float32, format by the suffix of --out:
  .npz          numpy.load(path): "line-N" (N = 1-based line number) -> (layers, T, D);
                "line-N.tokens" -> (T,) unicode strings; "meta" -> one JSON string
  .safetensors  "line-N" -> (layers, T, D); the metadata holds "line-N.tokens" (a JSON list) and
                "meta"
"meta" records the model directory, its model_type, --layers and the resolved extract options
(the precision the encoder ran in among them: training/precision.py; the features are float32).
The .npz is written array by array (memory stays flat); safetensors needs every array before it
writes its header, so it holds them all in memory.
"""

from __future__ import annotations

import dataclasses
import json
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from muppets.data.streams import tokenize_words
from muppets.data.text import ReadStats, read_lines, resolve_inputs
from muppets.errors import ConfigError, InputError
from muppets.tasks.features import ScalarMix, remove_sentence_boundaries
from muppets.tasks.prediction import NONFINITE
from muppets.tokenization.characters import batch_to_char_ids
from muppets.training.checkpoint import read_config
from muppets.training.options import Precision, device_option, group, option
from muppets.training.precision import autocast
from muppets.training.pretrained import load_elmo, load_pretrained, resolve_checkpoint

LAYER_CHOICES = ("all", "mean", "top")
FORMATS = (".npz", ".safetensors")

# (texts of a batch, their line numbers) -> (L + 1 tensors (B, T, D), mask (B, T), token lists)
Featurizer = Callable[[list[str], list[int]], tuple[list[Tensor], Tensor, list[list[str]]]]


@dataclass
class ExtractConfig:
    model: str = option("checkpoint or run directory (ELMo or BERT family)", "")
    input: str = option("text file, one text per line", "")
    out: str = option("output file: .npz or .safetensors", "")
    layers: str = option("all, mean (ScalarMix s=0, gamma=1) or top", "all")
    batch_size: int = option("lines per forward pass", 32)
    whitespace_tokens: bool = option("ELMo: split lines on whitespace only", False)
    device: str = device_option()
    arithmetic: Precision = group(Precision)

    def __post_init__(self):
        if not self.model or not self.input or not self.out:
            raise ConfigError("model, input and out are required")
        if self.layers not in LAYER_CHOICES:
            raise ConfigError(f"layers must be one of {', '.join(LAYER_CHOICES)}: {self.layers!r}")
        if Path(self.out).suffix not in FORMATS:
            raise ConfigError(f"out must end in {' or '.join(FORMATS)}, got {self.out!r}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")


def elmo_featurizer(model, whitespace_tokens: bool = False) -> Featurizer:
    def featurize(texts: list[str], lines: list[int]):
        words = [t.split() if whitespace_tokens else tokenize_words(t) for t in texts]
        device = next(model.parameters()).device
        char_ids = batch_to_char_ids(words).to(device)  # (B, T + 2, C) with <S> </S>
        mask = char_ids.ne(0).any(-1)  # (B, T + 2)
        layers = model.forward_all_layers(char_ids, mask)  # L + 1 x (B, T + 2, D)
        stripped = [remove_sentence_boundaries(h, mask) for h in layers]
        return [h for h, _ in stripped], stripped[0][1], words

    return featurize


def bert_featurizer(encoder, tokenizer, max_length: int, path: str) -> Featurizer:
    def featurize(texts: list[str], lines: list[int]):
        ids = [tokenizer.encode_pair(t)[0] for t in texts]  # [CLS] ... [SEP]
        for n, line in zip(ids, lines, strict=True):
            if len(n) > max_length:
                raise InputError(f"{len(n)} tokens, more than the model's {max_length}", path, line)
        T = max(len(n) for n in ids)
        input_ids = torch.full((len(ids), T), tokenizer.pad_id, dtype=torch.long)  # (B, T)
        mask = torch.zeros(len(ids), T, dtype=torch.long)
        for b, n in enumerate(ids):
            input_ids[b, : len(n)], mask[b, : len(n)] = torch.tensor(n), 1
        device = next(encoder.parameters()).device
        layers = encoder.forward_all_layers(input_ids.to(device), mask.to(device))
        tokens = [[tokenizer.id_to_token(i) for i in n] for n in ids]
        return layers, mask.bool().to(device), tokens

    return featurize


def select_layers(layers: list[Tensor], mask: Tensor, choice: str) -> Tensor:
    """L + 1 x (B, T, D) -> (K, B, T, D) with K = L + 1 (all) or 1 (mean, top)."""
    if choice == "top":
        return layers[-1].unsqueeze(0)
    if choice == "mean":
        mix = ScalarMix(len(layers)).to(layers[0].device)  # s = 0, gamma = 1: the mean
        return mix(layers, mask).unsqueeze(0)
    return torch.stack(layers)


class _NpzWriter:
    """numpy.savez's layout (one .npy member per array), written one array at a time."""

    def __init__(self, path: Path):
        self.zip = zipfile.ZipFile(path, "w", allowZip64=True)

    def add(self, key: str, features: np.ndarray, tokens: list[str]) -> None:
        self._array(key, features)
        self._array(f"{key}.tokens", np.array(tokens, dtype=str))

    def _array(self, key: str, array: np.ndarray) -> None:
        with self.zip.open(f"{key}.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array(f, array, allow_pickle=False)  # copies if not contiguous

    def close(self, meta: dict) -> None:
        self._array("meta", np.array(json.dumps(meta)))
        self.zip.close()

    def abort(self) -> None:
        self.zip.close()
        Path(self.zip.filename).unlink(missing_ok=True)


class _SafetensorsWriter:
    def __init__(self, path: Path):
        self.path, self.tensors, self.metadata = path, {}, {}

    def add(self, key: str, features: np.ndarray, tokens: list[str]) -> None:
        self.tensors[key] = torch.from_numpy(np.ascontiguousarray(features))
        self.metadata[f"{key}.tokens"] = json.dumps(tokens, ensure_ascii=False)

    def close(self, meta: dict) -> None:
        from safetensors.torch import save_file

        metadata = {**self.metadata, "meta": json.dumps(meta)}
        save_file(self.tensors, str(self.path), metadata=metadata)

    def abort(self) -> None:
        self.path.unlink(missing_ok=True)


def load_featurizer(config: ExtractConfig, device: torch.device) -> tuple[Featurizer, dict]:
    """The checkpoint's featurizer, dispatched on config.json's model_type, and its description."""
    directory = resolve_checkpoint(config.model)
    kind = read_config(directory).get("model_type")
    if kind == "elmo":
        model, model_config, _ = load_elmo(directory)
        model.to(device)
        featurize = elmo_featurizer(model, config.whitespace_tokens)
        layers, dim = model_config.num_layers + 1, model_config.hidden_size
    else:  # BERT family (ours or Hugging Face's); load_pretrained names what is wrong
        if config.whitespace_tokens:
            raise ConfigError("whitespace_tokens applies to ELMo checkpoints only")
        model, model_config, tokenizer = load_pretrained(directory)
        encoder = model.encoder.to(device)
        max_length = model_config.max_sequence_length
        featurize = bert_featurizer(encoder, tokenizer, max_length, config.input)
        layers, dim = model_config.num_hidden_layers + 1, model_config.hidden_size
    meta = {"model": str(directory), "model_type": kind or "bert", "model_layers": layers}
    return featurize, {**meta, "dim": dim}


@torch.inference_mode()
def extract(config: ExtractConfig) -> dict:
    """Write the features of every line of config.input to config.out; returns the meta data."""
    path = resolve_inputs([config.input])[0]
    auto = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(auto if config.device == "auto" else config.device)
    config = dataclasses.replace(config, arithmetic=config.arithmetic.start(device))
    precision = config.arithmetic.precision
    featurize, meta = load_featurizer(config, device)
    meta.update(layers=config.layers, options=dataclasses.asdict(config))
    out = Path(config.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    writer = _NpzWriter(tmp) if out.suffix == ".npz" else _SafetensorsWriter(tmp)
    n_lines = n_tokens = 0

    def flush(texts: list[str], lines: list[int]) -> None:
        nonlocal n_lines, n_tokens
        with autocast(precision, device):
            layers, mask, tokens = featurize(texts, lines)
        features = select_layers(layers, mask, config.layers).float().cpu().numpy()  # (K,B,T,D)
        for b, line in enumerate(lines):
            n = len(tokens[b])
            if not np.isfinite(features[:, b, :n]).all():
                broken = f"the model gives {NONFINITE} (line {line} of {path})"
                raise InputError(broken, resolve_checkpoint(config.model))
            writer.add(f"line-{line}", features[:, b, :n], tokens[b])  # (K, n, D)
            n_lines, n_tokens = n_lines + 1, n_tokens + n

    try:
        texts, lines = [], []
        for line, text in read_lines(path, "strict", ReadStats()):
            texts.append(text.strip())
            lines.append(line)
            if len(texts) == config.batch_size:
                flush(texts, lines)
                texts, lines = [], []
        if texts:
            flush(texts, lines)
        meta.update(lines=n_lines, tokens=n_tokens)
        writer.close(meta)
    except BaseException:
        writer.abort()
        raise
    os.replace(tmp, out)  # only a complete file takes the name
    K = meta["model_layers"] if config.layers == "all" else 1
    print(
        f"extract: {n_lines:,} lines, {n_tokens:,} tokens, {K} x {meta['dim']} features per "
        f"token ({meta['model_type']}, layers={config.layers}) -> {out}"
    )
    return meta
