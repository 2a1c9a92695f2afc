"""Budget-sized training sets for the real fine-tuning runs recorded in RESULTS.md.

The 2-core machine cannot fine-tune 3 seeds x 2 models over all of SST-2 (67k sentences) or SQuAD
(88k questions) in a session, so those two training sets are cut to a seeded random subset; the
small GLUE sets are linked whole, and every dev set is whole. The same seed gives the same files.

    .venv/bin/python bench/budget_data.py --data ../shared/data --out runs/data
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

WHOLE = ("CoLA", "MRPC", "STS-B", "RTE")


def sample_sst2(source: Path, target: Path, n: int, rng: random.Random) -> int:
    header, *rows = (source / "train.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    target.mkdir(parents=True, exist_ok=True)
    picked = sorted(rng.sample(range(len(rows)), min(n, len(rows))))
    (target / "train.tsv").write_text(header + "".join(rows[i] for i in picked), "utf-8")
    _link(source / "dev.tsv", target / "dev.tsv")
    return len(picked)


def sample_squad(source: Path, target: Path, n: int, rng: random.Random) -> int:
    """Whole paragraphs (all their questions) drawn at random until n questions are taken."""
    data = json.loads(source.read_text(encoding="utf-8"))
    paragraphs = [(a["title"], p) for a in data["data"] for p in a["paragraphs"]]
    rng.shuffle(paragraphs)
    taken, count = {}, 0
    for title, paragraph in paragraphs:
        if count >= n:
            break
        taken.setdefault(title, []).append(paragraph)
        count += len(paragraph["qas"])
    articles = [{"title": t, "paragraphs": ps} for t, ps in taken.items()]
    target.mkdir(parents=True, exist_ok=True)
    out = {"version": data.get("version", "1.1"), "data": articles}
    (target / "train-v1.1.json").write_text(json.dumps(out), "utf-8")
    return count


def _link(source: Path, target: Path) -> None:
    if target.is_symlink() or target.exists():
        target.unlink()
    target.symlink_to(source.resolve())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=Path("runs/data"))
    parser.add_argument("--sst2", type=int, default=10_000, help="SST-2 training sentences")
    parser.add_argument("--squad", type=int, default=5_000, help="SQuAD training questions")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    glue = args.out / "glue"
    for task in WHOLE:
        (glue / task).mkdir(parents=True, exist_ok=True)
        for split in ("train.tsv", "dev.tsv"):
            _link(args.data / "glue" / task / split, glue / task / split)
    sst2 = sample_sst2(
        args.data / "glue" / "SST-2", glue / "SST-2", args.sst2, random.Random(args.seed)
    )
    squad_source = args.data / "squad-v1.1" / "train-v1.1.json"
    squad = sample_squad(squad_source, args.out / "squad", args.squad, random.Random(args.seed))
    _link(args.data / "xquad-en" / "xquad.en.json", args.out / "squad" / "dev-v1.1.json")
    print(f"{glue}: {', '.join(WHOLE)} whole, SST-2 {sst2:,} training sentences")
    print(f"{args.out / 'squad'}: {squad:,} SQuAD v1.1 training questions, XQuAD-en as dev")


if __name__ == "__main__":
    main()
