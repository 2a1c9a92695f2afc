"""ELMo biLM pretraining throughput: ours (muppets' recipe pieces) vs a plain PyTorch reference.

One optimizer step = forward + backward + fused AdamW step on one micro-batch of windows (the
loop's bookkeeping is left out of both). The batches are the same for every model: real windows of
the bundled sample (data/streams.py), vocabulary cut to the preset's size.

  ours          BiLMLoss(ElmoBiLM(preset)): char CNN + highway, LSTMP stacks with the preset's
                cell/projection clipping (bilm-tf; a step-by-step loop), residual, shared softmax
  ours-noclip   the same with cell_clip = proj_clip = None: nn.LSTM's fused kernel per layer
  reference     plain PyTorch on the same sizes: an identical char CNN written out, two
                nn.LSTM(num_layers=L, proj_size=P) stacks (forward; backward on the flipped
                windows), one full softmax Linear(P, V) + cross_entropy over both directions

Variants run interleaved (round-robin, median over rounds) in one process, for each thread count.

    .venv/bin/python bench/elmo_throughput.py [--preset elmo-small] [--rounds 5] [--threads 1 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from muppets.data.streams import WindowBatches, corpus_sentences, count_words
from muppets.models.elmo import ACTIVATIONS, IGNORE, PRESETS, ElmoBiLM, ElmoConfig
from muppets.tasks.objectives import BiLMLoss
from muppets.tokenization.words import build_word_vocabulary

SAMPLE = Path(__file__).resolve().parents[1] / "muppets" / "samples" / "wiki.train.txt"


class Reference(nn.Module):
    """The plain-PyTorch biLM (module docstring); no clipping, no residual, no masking."""

    def __init__(self, c: ElmoConfig):
        super().__init__()
        n_filters = sum(n for _, n in c.filters)
        self.embedding = nn.Embedding(c.char_vocab_size, c.char_embedding_dim, padding_idx=0)
        self.convolutions = nn.ModuleList(
            nn.Conv1d(c.char_embedding_dim, n, w) for w, n in c.filters
        )
        self.activation = ACTIVATIONS[c.activation]
        self.highways = nn.ModuleList(
            nn.Linear(n_filters, 2 * n_filters) for _ in range(c.n_highway)
        )
        self.projection = nn.Linear(n_filters, c.projection_dim)
        P, S, L = c.projection_dim, c.cell_dim, c.num_layers
        self.forward_lstm = nn.LSTM(P, S, L, batch_first=True, dropout=c.dropout, proj_size=P)
        self.backward_lstm = nn.LSTM(P, S, L, batch_first=True, dropout=c.dropout, proj_size=P)
        self.dropout = nn.Dropout(c.dropout)
        self.softmax = nn.Linear(P, c.vocab_size)

    def forward(self, char_ids, mask, forward_targets, backward_targets):
        B, T, C = char_ids.shape
        chars = self.embedding(char_ids.view(B * T, C)).transpose(1, 2)  # (BT, E, C)
        h = torch.cat([self.activation(conv(chars).amax(-1)) for conv in self.convolutions], -1)
        for highway in self.highways:
            transform, gate = highway(h).chunk(2, dim=-1)
            gate = torch.sigmoid(gate)
            h = gate * h + (1 - gate) * F.relu(transform)
        x = self.dropout(self.projection(h).view(B, T, -1))  # (B, T, P)
        forward_states = self.forward_lstm(x)[0]
        backward_states = self.backward_lstm(x.flip(1))[0].flip(1)
        states = self.dropout(torch.cat([forward_states, backward_states]))  # (2B, T, P)
        targets = torch.cat([forward_targets, backward_targets])  # (2B, T)
        logits = self.softmax(states)  # (2B, T, V): every position, as plain code does
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE)
        n = int(targets.ne(IGNORE).sum())
        return loss * n, n


def step_seconds(model: nn.Module, optimizer, batch: dict) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this thread): on a shared machine the wall time includes
    waiting for a core; with 1 thread the CPU time is the cost of the code itself."""
    start, cpu = time.perf_counter(), time.thread_time()
    names = ("char_ids", "attention_mask", "forward_targets", "backward_targets")
    loss, n = model(*(batch[name] for name in names))
    (loss / n).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start, time.thread_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="elmo-small")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--window", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5, help="timed steps per variant")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()

    preset = PRESETS[args.preset]
    counts = count_words(corpus_sentences([str(SAMPLE)]))
    vocabulary = build_word_vocabulary(counts, max_size=preset["vocab_size"])
    source = WindowBatches(
        [str(SAMPLE)], vocabulary, window=args.window, batch_size=args.batch_size
    )
    batches = [next(source) for _ in range(args.rounds + 2)]  # 2 warm-up steps
    tokens = int(batches[0]["attention_mask"].sum())
    config = ElmoConfig(**{**preset, "vocab_size": len(vocabulary)})
    noclip = ElmoConfig(**{**preset, "vocab_size": len(vocabulary)}, cell_clip=None, proj_clip=None)
    builders = {
        "ours": lambda: BiLMLoss(ElmoBiLM(config)),
        "ours-noclip": lambda: BiLMLoss(ElmoBiLM(noclip)),
        "reference": lambda: Reference(config),
    }
    print(
        f"{args.preset}: {args.batch_size} windows x {args.window} tokens = {tokens} per step, "
        f"vocabulary {len(vocabulary)}, torch {torch.__version__}"
    )
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        torch.manual_seed(0)
        models = {name: build().train() for name, build in builders.items()}
        optimizers = {
            name: torch.optim.AdamW(m.parameters(), lr=1e-3, fused=True)
            for name, m in models.items()
        }
        times = {name: [] for name in models}
        for i, batch in enumerate(batches):  # round-robin: load changes hit every variant
            for name, model in models.items():
                seconds = step_seconds(model, optimizers[name], batch)
                if i >= 2:
                    times[name].append(seconds)
        for name in models:
            wall = statistics.median(s for s, _ in times[name])
            cpu = statistics.median(c for _, c in times[name])
            rows.append((threads, name, wall, tokens / wall, cpu))
    reference = {t: (tps, cpu) for t, name, _, tps, cpu in rows if name == "reference"}
    print("| threads | model | s/step (median) | tokens/s | vs reference | CPU s/step | by CPU |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for threads, name, wall, tps, cpu in rows:
        ref_tps, ref_cpu = reference[threads]
        print(
            f"| {threads} | {name} | {wall:.3f} | {tps:,.0f} | {tps / ref_tps:.2f}x "
            f"| {cpu:.3f} | {ref_cpu / cpu:.2f}x |"
        )


if __name__ == "__main__":
    main()
