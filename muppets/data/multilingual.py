"""Several corpora, one language each, sampled with exponentially smoothed probabilities.

Devlin et al.'s multilingual BERT (github.com/google-research/bert, multilingual.md) and XLM
(Lample & Conneau 2019, section 3.1) sample language i with q_i = p_i^alpha / sum_j p_j^alpha,
p_i the language's share of the text, so that small languages are seen more often than their
share (alpha 0.7 for mBERT; alpha 1 is proportional). The reference formula is fairseq's
`MultilingualMaskedLMTask._get_sample_prob` (tasks/multilingual_masked_lm.py), and its
`load_dataset` resamples each language by `size_ratio = q_i * total / size_i`, which is what
`size_ratios` returns: the sampled corpus keeps the total size, each language at its rate.

Sizes are counted in tokens of the tokenizer where there is one (`prepare`: the shards, hence the
pretraining instances, then hold each language at its rate), else in characters (code points;
`tokenizer train`), never in whitespace words, which mean nothing for Chinese. The two differ:
BERT's tokenizer makes every CJK ideograph a token, so Chinese has about 4x more tokens per
character than the other languages here. Each language's lines are up- or down-sampled once, by
a seeded plan (`multiplicities`: every line `floor(r)` times, plus one more time for a random
`r - floor(r)` share of them), for tokenizer training and for `prepare` alike. No language-id
token is added (as mBERT).

A corpus is written `LANG=PATH` in `inputs` (`--inputs en=en.txt de=de/*.txt`); inputs without
a language code read as before.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from muppets.data.text import Document, ReadStats, read_documents, resolve_inputs
from muppets.errors import ConfigError, InputError

# "en", "zh_Hans", "pt-BR": an ISO 639 code and optional subtags, then "=" and the path.
_CODED = re.compile(r"^([a-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*)=(.+)$")
# Sampled lines are grouped into documents of at most this many lines: pretraining deals
# documents to its partitions (d % partitions), so a language kept as one huge document (a file
# of one sentence per line has no blank lines) would be one partition, not its rate.
DOCUMENT_LINES = 64
SAMPLING_FILE = "sampling.json"


@dataclass(frozen=True)
class Corpus:
    language: str
    inputs: tuple[str, ...]  # files or globs, in the order given


def parse_corpora(inputs: Sequence[str], name: str = "inputs") -> list[Corpus] | None:
    """`LANG=PATH` entries grouped by language (first-seen order); None when no entry has a
    code (one corpus, read as before). Mixing coded and uncoded entries is an error."""
    coded = [_CODED.match(str(entry)) for entry in inputs]
    if not any(coded):
        return None
    first = next(str(e) for e, m in zip(inputs, coded, strict=True) if m)
    grouped: dict[str, list[str]] = {}
    for entry, match in zip(inputs, coded, strict=True):
        if match is None:
            raise ConfigError(
                f"{name}: {entry!r} has no language code (write LANG=PATH, as {first!r})"
            )
        grouped.setdefault(match.group(1), []).append(match.group(2))
    return [Corpus(language, tuple(paths)) for language, paths in grouped.items()]


def input_paths(inputs: Sequence[str]) -> list[str]:
    """The files or globs of `inputs`, language codes removed."""
    corpora = parse_corpora(inputs)
    if corpora is None:
        return [str(entry) for entry in inputs]
    return [path for corpus in corpora for path in corpus.inputs]


def check_alpha(alpha: float) -> None:
    if not 0 < alpha <= 1:
        raise ConfigError(f"alpha must be in (0, 1] (1: proportional, mBERT 0.7), got {alpha!r}")


def sampling_rates(sizes: Sequence[float], alpha: float) -> np.ndarray:
    """q_i = p_i^alpha / sum_j p_j^alpha with p_i = size_i / sum(size): fairseq's
    _get_sample_prob."""
    check_alpha(alpha)
    sizes = np.asarray(sizes, dtype=np.float64)
    smoothed = (sizes / sizes.sum()) ** alpha
    return smoothed / smoothed.sum()


def size_ratios(sizes: Sequence[float], alpha: float) -> np.ndarray:
    """How many times each language's text is taken (<1: down-sampled): q_i * total / size_i,
    fairseq's size_ratio."""
    sizes = np.asarray(sizes, dtype=np.float64)
    return sampling_rates(sizes, alpha) * sizes.sum() / sizes


def sampled_lines(lines: int, ratio: float) -> int:
    """Lines a language keeps after sampling: round(ratio * lines), at least one."""
    return max(1, int(round(ratio * lines)))


def multiplicities(lines: int, target: int, rng: np.random.Generator) -> np.ndarray:
    """(lines,) how often each line is taken so that they sum to `target`: every line
    target // lines times, and a random target % lines of them once more (no replacement)."""
    times = np.full(lines, target // lines, dtype=np.int32)  # 4 bytes a line
    times[rng.choice(lines, target % lines, replace=False)] += 1
    return times


@dataclass
class LanguagePlan:
    language: str
    files: list[str]
    lines: int  # non-empty lines (paragraphs) of the language's inputs
    size: int  # in `unit`s
    unit: str = "characters"  # or "tokens"
    share: float = 0.0  # p_i
    rate: float = 0.0  # q_i
    ratio: float = 0.0  # q_i * total / size_i
    sampled: int = 0  # lines after sampling
    times: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32), repr=False)

    def record(self) -> dict:
        keys = ("language", "files", "lines", "size", "unit", "share", "rate", "ratio", "sampled")
        return {k: getattr(self, k) for k in keys}


def characters(texts: list[str]) -> int:
    return sum(map(len, texts))


def _count(corpus: Corpus, reading: tuple, measure, unit: str) -> LanguagePlan:
    files = resolve_inputs(corpus.inputs)
    lines = size = 0
    try:
        for document in read_documents(files, *reading, segment=False):
            lines += len(document.sentences)
            size += measure(document.sentences)
    except InputError as error:
        if not error.message.startswith("no text in"):
            raise
        where = files[0] if len(files) == 1 else ", ".join(files)
        raise InputError(f"language {corpus.language!r} has no text", where) from None
    return LanguagePlan(corpus.language, files, lines, size, unit)


def plan_sampling(
    inputs: Sequence[str],
    alpha: float,
    seed: int = 0,
    format: str = "auto",
    text_field: str = "text",
    errors: str = "strict",
    measure: Callable[[list[str]], int] = characters,
    unit: str = "characters",
) -> list[LanguagePlan] | None:
    """Count each language's text (`measure`: lines -> size in `unit`s) and draw its sampling
    plan; None for uncoded inputs."""
    corpora = parse_corpora(inputs)
    if corpora is None:
        return None
    check_alpha(alpha)
    plans = [_count(corpus, (format, text_field, errors), measure, unit) for corpus in corpora]
    if not all(plan.size for plan in plans):
        empty = next(plan for plan in plans if not plan.size)
        raise InputError(f"language {empty.language!r} has no {unit}", ", ".join(empty.files))
    sizes = [plan.size for plan in plans]
    shares = np.asarray(sizes, np.float64) / sum(sizes)
    rates, ratios = sampling_rates(sizes, alpha), size_ratios(sizes, alpha)
    for k, plan in enumerate(plans):
        plan.share, plan.rate, plan.ratio = float(shares[k]), float(rates[k]), float(ratios[k])
        plan.sampled = sampled_lines(plan.lines, plan.ratio)
        rng = np.random.default_rng([seed, k])  # one stream per language: plans independent
        plan.times = multiplicities(plan.lines, plan.sampled, rng)
    return plans


def describe(plans: list[LanguagePlan], alpha: float) -> str:
    """The rates, one line per language (printed once by each command)."""
    unit = plans[0].unit if plans else "characters"
    rows = [f"language sampling (alpha {alpha:g}, sizes in {unit}):"]
    for p in plans:
        rows.append(
            f"  {p.language:<8} {p.size:>12,} {p.unit[:3]}  p {p.share:.4f} -> q {p.rate:.4f}  "
            f"x{p.ratio:.3f}: {p.lines:,} -> {p.sampled:,} lines"
        )
    return "\n".join(rows)


def sampling_record(plans: list[LanguagePlan], alpha: float, seed: int) -> dict:
    return {"alpha": alpha, "seed": seed, "languages": [p.record() for p in plans]}


def write_sampling(directory: str | Path, record: dict) -> Path:
    path = Path(directory) / SAMPLING_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def _passes(plan: LanguagePlan, read) -> Iterator[tuple[Document, list[int]]]:
    """(document, kept sentence indices) of each pass over the language's inputs: pass c keeps
    the lines taken more than c times, so copies of a line land in different passes."""
    for copy in range(int(plan.times.max(initial=0))):
        ordinal, previous = -1, None
        for document in read(plan):
            kept = []
            for i, line in enumerate(document.lines):
                if (document.path, line) != previous:  # a new line (paragraph) starts
                    ordinal, previous = ordinal + 1, (document.path, line)
                if plan.times[ordinal] > copy:
                    kept.append(i)
            if kept:
                yield document, kept


def sampled_paragraphs(
    plans: list[LanguagePlan],
    format: str = "auto",
    text_field: str = "text",
    errors: str = "strict",
    stats: ReadStats | None = None,
) -> Iterator[str]:
    """Every sampled line of every language, language after language (tokenizer training)."""

    def read(plan):
        return read_documents(plan.files, format, text_field, errors, False, stats=stats)

    for plan in plans:
        for document, kept in _passes(plan, read):
            yield from (document.sentences[i] for i in kept)


def sampled_documents(
    plans: list[LanguagePlan],
    format: str = "auto",
    text_field: str = "text",
    errors: str = "strict",
    stats: ReadStats | None = None,
) -> Iterator[Document]:
    """The sampled lines as documents of at most DOCUMENT_LINES lines, sentences segmented by
    each corpus's language (prepare)."""

    def read(plan):
        language = plan.language.split("_")[0].split("-")[0]
        return read_documents(plan.files, format, text_field, errors, True, language, stats)

    for plan in plans:
        for document, kept in _passes(plan, read):
            sentences: list[str] = []
            lines: list[int] = []
            count = 0  # distinct lines in the document being built
            for i in kept:
                line = document.lines[i]
                if not lines or line != lines[-1]:
                    if count == DOCUMENT_LINES:
                        yield Document(document.path, lines[0], sentences, lines)
                        sentences, lines, count = [], [], 0
                    count += 1
                sentences.append(document.sentences[i])
                lines.append(line)
            if sentences:
                yield Document(document.path, lines[0], sentences, lines)


def recorded_sampling(shards_dir: str | Path) -> dict | None:
    """The sampling record `prepare` wrote beside its shards, or None (one language)."""
    path = Path(shards_dir) / SAMPLING_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InputError(f"not valid JSON: {e.msg}", path, e.lineno) from None


def describe_record(record: dict) -> str:
    plans = [LanguagePlan(**{k: v for k, v in r.items()}) for r in record["languages"]]
    return describe(plans, record["alpha"])
