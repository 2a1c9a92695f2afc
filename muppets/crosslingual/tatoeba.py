"""Tatoeba retrieval with a pretrained encoder: mean-pooled hidden layers of both sides, nearest
neighbour by cosine in both directions (tasks/retrieval.py), for every layer at once.

Files as in LASER's data/tatoeba/v1 (and XTREME): `tatoeba.<xxx>-eng.<xxx>` and
`tatoeba.<xxx>-eng.eng`, 1,000 line-aligned pairs each, <xxx> an ISO 639-3 code.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from muppets.data.text import ReadStats, read_lines
from muppets.errors import InputError
from muppets.tasks.retrieval import both_directions, mean_pool
from muppets.training.pretrained import load_pretrained

# LASER's ISO 639-3 names -> the two-letter codes of the rest of the project
ISO3 = {"ara": "ar", "cmn": "zh", "deu": "de", "hin": "hi", "rus": "ru", "spa": "es", "tur": "tr"}
_PAIR = re.compile(r"^tatoeba\.([a-z]{3})-eng\.([a-z]{3})$")


def find_pairs(directory: str | Path) -> dict[str, tuple[Path, Path]]:
    """{language: (its file, the English file)} of every pair in a directory."""
    pairs = {}
    for path in sorted(Path(directory).iterdir()):
        match = _PAIR.match(path.name)
        if match and match.group(1) == match.group(2):
            english = path.with_name(f"tatoeba.{match.group(1)}-eng.eng")
            if english.is_file():
                pairs[ISO3.get(match.group(1), match.group(1))] = (path, english)
    if not pairs:
        raise InputError("no Tatoeba pairs (tatoeba.xxx-eng.xxx and .eng) here", directory)
    return pairs


def read_side(path: Path) -> list[str]:
    lines = [text.strip() for _, text in read_lines(str(path), "strict", ReadStats())]
    if not lines or not all(lines):
        empty = next((i for i, t in enumerate(lines, 1) if not t), 1)
        raise InputError("an empty line: every line must hold a sentence", path, empty)
    return lines


@torch.inference_mode()
def embed(encoder, tokenizer, texts: list[str], batch_size: int, max_length: int) -> torch.Tensor:
    """(L + 1, N, H): each text's mean over its tokens ([CLS] ... [SEP]) at every layer."""
    device = next(encoder.parameters()).device
    rows = []
    for start in range(0, len(texts), batch_size):
        ids = [tokenizer.encode_pair(t)[0][:max_length] for t in texts[start : start + batch_size]]
        T = max(map(len, ids))
        input_ids = torch.full((len(ids), T), tokenizer.pad_id, dtype=torch.long)  # (B, T)
        mask = torch.zeros(len(ids), T, dtype=torch.long)
        for b, n in enumerate(ids):
            input_ids[b, : len(n)], mask[b, : len(n)] = torch.tensor(n), 1
        layers = encoder.forward_all_layers(input_ids.to(device), mask.to(device))
        mask = mask.to(device)
        rows.append(torch.stack([mean_pool(h.float(), mask) for h in layers]).cpu())  # (L+1,B,H)
    return torch.cat(rows, dim=1)


def tatoeba_scores(
    model_dir: str,
    pairs: dict[str, tuple[Path, Path]],
    device: torch.device,
    batch_size: int = 64,
    max_length: int = 128,
) -> dict[str, list[dict[str, float]]]:
    """{language: [both directions' accuracy at layer 0 (embeddings), 1, ..., L]}."""
    model, _, tokenizer = load_pretrained(model_dir)
    encoder = model.encoder.to(device).eval()
    scores = {}
    for language, (source, english) in pairs.items():
        xx, en = read_side(source), read_side(english)
        if len(xx) != len(en):
            raise InputError(f"{len(xx)} lines, but {len(en)} in {english}", source)
        a = embed(encoder, tokenizer, xx, batch_size, max_length)
        b = embed(encoder, tokenizer, en, batch_size, max_length)
        scores[language] = [both_directions(a[k], b[k]) for k in range(len(a))]
    return scores
