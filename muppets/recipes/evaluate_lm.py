"""`muppets evaluate-lm`: a Transformer-XL checkpoint's perplexity on WikiText `.tokens` files,
for several evaluation memory lengths in one call (Dai et al. 2019, section 4.3 and Table 9:
the same trained model, longer memory at evaluation).

As the reference's eval.py: the model's tgt_len / mem_len / clamp_len / same_length are reset for
evaluation (MemTransformerLM.reset_length), the file is one stream (data/wikitext.py) cut into
batch_size rows (LMOrderedIterator) and read segment by segment with memories carried. Figures:
    per piece = exp(NLL / predicted pieces)
    per word  = exp(NLL / words whose pieces were predicted)   (words and eos: the reference's)
The per-word figure is the one comparable across tokenizers and with the paper's (word-level
vocabulary); a tokenizer that drops words (dropped_words) makes it slightly optimistic.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from muppets.data.lm_streams import IGNORE_INDEX, OrderedSegments
from muppets.data.wikitext import WikiTextStream, read_wikitext
from muppets.errors import ConfigError
from muppets.models.transfo_xl import TransfoXLLMHeadModel
from muppets.training.device import pick_device, torch_threads
from muppets.training.options import check, device_option, option
from muppets.training.pretrained import eos_id, load_transfo_xl

WIKITEXT = "../shared/data/wikitext-103-eval"


@dataclass
class EvaluateLMConfig:
    model: str = option("pretrain-lm checkpoint or run directory", "")
    data: list[str] | None = option(
        f"WikiText .tokens files (default: wiki.valid and wiki.test in {WIKITEXT})", None
    )
    out: str = option("directory for result.json", "runs/evaluate-lm")
    tgt_len: int | None = option("tokens per segment (default: the model's)", None)
    mem_len: list[int] | None = option(
        "memory lengths to evaluate with (default: 0, tgt_len and 4 x tgt_len)", None
    )
    clamp_len: int | None = option("clamp of relative distances, 0: none (default: model's)", None)
    same_length: bool = option("every query sees the same number of keys (eval.py's option)", False)
    batch_size: int = option("parallel rows of the stream (the reference's eval_batch_size)", 10)
    max_segments: int = option("segments read per file and memory length (0: all)", 0)
    device: str = device_option()
    threads: int = option("torch CPU threads (0: torch's default)", 0)

    def __post_init__(self):
        if not self.model:
            raise ConfigError("model is required (a pretrain-lm checkpoint or run directory)")
        if not self.data:
            self.data = [f"{WIKITEXT}/wiki.{split}.tokens" for split in ("valid", "test")]
        if isinstance(self.mem_len, int):
            self.mem_len = [self.mem_len]
        mems = self.mem_len or []
        clamp = self.clamp_len
        rules = [
            ("tgt_len", self.tgt_len is None or self.tgt_len >= 1, ">= 1"),
            ("mem_len", all(m >= 0 for m in mems), ">= 0 (0: no memory)"),
            ("clamp_len", clamp is None or clamp >= 0, ">= 0 (0: no clamp)"),
            ("batch_size", self.batch_size >= 1, ">= 1"),
            ("max_segments", self.max_segments >= 0, ">= 0"),
            ("threads", self.threads >= 0, ">= 0"),
        ]
        check(self, rules)


@torch.no_grad()
def stream_nll(
    model: TransfoXLLMHeadModel, segments: OrderedSegments, max_segments: int = 0, device="cpu"
) -> tuple[np.ndarray, np.ndarray]:
    """(N,) float64 NLL of every stream token as a target (0 where not predicted) and (N,) bool
    which were predicted, over the first max_segments segments (0: all), memories carried."""
    n_step = segments.n_step
    nll = np.zeros(len(segments.stream), dtype=np.float64)
    seen = np.zeros(len(segments.stream), dtype=bool)
    mems = None
    count = len(segments) if not max_segments else min(max_segments, len(segments))
    for k in range(count):
        batch = segments.segment(k)
        labels = batch["labels"].to(device)
        out = model(batch["input_ids"].to(device), mems, labels, return_logits=False)
        mems = out.mems
        T = labels.shape[1]
        for b, r in enumerate(segments.rows):  # target of position i + t is token i + t + 1
            start = r * n_step + k * segments.tgt_len + 1
            nll[start : start + T] = out.nll[b].double().cpu().numpy()
            seen[start : start + T] = labels[b].cpu().numpy() != IGNORE_INDEX
    return nll, seen


def perplexities(text: WikiTextStream, nll: np.ndarray, seen: np.ndarray) -> dict:
    """Per piece and per word from the NLL of the predicted pieces (module docstring)."""
    total, pieces = float(nll[seen].sum()), int(seen.sum())
    words = int(text.word_start[seen].sum())
    return {
        "pieces": pieces,
        "words": words,
        "nll": total,
        "ppl_piece": math.exp(total / max(pieces, 1)),
        "ppl_word": math.exp(total / max(words, 1)),
    }


def evaluate_lm(config: EvaluateLMConfig) -> dict:
    with torch_threads(config.threads):
        return _evaluate_lm(config)


def _evaluate_lm(config: EvaluateLMConfig) -> dict:
    device = pick_device(config.device)
    model, trained, tokenizer = load_transfo_xl(config.model)
    model.to(device).eval()
    tgt_len = config.tgt_len or trained.tgt_len
    mem_lens = config.mem_len if config.mem_len is not None else [0, tgt_len, 4 * tgt_len]
    clamp = trained.clamp_len if config.clamp_len is None else config.clamp_len
    rows = []
    for path in config.data:
        text = read_wikitext(path, tokenizer, eos_id(tokenizer))
        segments = OrderedSegments(text.stream, config.batch_size, tgt_len)
        for mem_len in mem_lens:
            lengths = {"tgt_len": tgt_len, "mem_len": mem_len, "clamp_len": clamp}
            model.config = dataclasses.replace(trained, **lengths, same_length=config.same_length)
            start = time.perf_counter()
            nll, seen = stream_nll(model, segments, config.max_segments, device)
            row = {"file": str(path), "tgt_len": tgt_len, "mem_len": mem_len, "clamp_len": clamp}
            row.update(perplexities(text, nll, seen))
            row["dropped_words"] = text.dropped_words
            row["seconds"] = round(time.perf_counter() - start, 1)
            rows.append(row)
            print(_row_line(row), flush=True)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"model": config.model, "same_length": config.same_length, "rows": rows}
    (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    print(table(rows))
    return result


def _row_line(row: dict) -> str:
    return (
        f"evaluate-lm: {Path(row['file']).name} mem_len {row['mem_len']}: ppl/piece "
        f"{row['ppl_piece']:.2f}, ppl/word {row['ppl_word']:.2f} ({row['seconds']} s)"
    )


def table(rows: list[dict]) -> str:
    """A Markdown table of the rows."""
    lines = [
        "| file | tgt_len | mem_len | clamp_len | pieces | words | ppl / piece | ppl / word |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {Path(r['file']).name} | {r['tgt_len']} | {r['mem_len']} | {r['clamp_len']} | "
            f"{r['pieces']:,} | {r['words']:,} | {r['ppl_piece']:.2f} | {r['ppl_word']:.2f} |"
        )
    return "\n".join(lines)
