"""Transformer-XL training speed: muppets' TransfoXLLMHeadModel vs a plain PyTorch transcription
of the reference (kimiyoung/transformer-xl pytorch/mem_transformer.py: MemTransformerLM with
RelPartialLearnableDecoderLayer, time-major, qkv_net / r_net / o_net Linear layers, the einsum
scores, _rel_shift by zero padding, masked_fill and softmax, PositionwiseFF, a full softmax head
tied to the embedding). transformers 5.x has no TransfoXL (removed), hence the transcription.

Same weights (the reference's built from ours; checked: the same logits), same consecutive
segments, dropout 0.1 on both; each side carries its own memories from step to step as training
does (mem_len per layer, detached). A step: forward, next-token cross-entropy, backward, clip at
1.0, fused AdamW (bench/step_timing.py). The machine is shared with other jobs: rounds are
interleaved in one process, step by step in turns; the table gives the best round of each by wall
time and by the process's CPU time. Run:

    .venv/bin/python bench/transfo_xl_throughput.py --model transfo-xl-tiny --threads 1
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from step_timing import timed_step
from torch import nn

from muppets.models.registry import lm_config
from muppets.models.transfo_xl import TransfoXLLMHeadModel


class RefAttention(nn.Module):
    """RelPartialLearnableMultiHeadAttn (post-LN path), transcribed."""

    def __init__(self, n_head, d_model, d_head, dropout):
        super().__init__()
        self.n_head, self.d_head = n_head, d_head
        self.qkv_net = nn.Linear(d_model, 3 * n_head * d_head, bias=False)
        self.r_net = nn.Linear(d_model, n_head * d_head, bias=False)
        self.o_net = nn.Linear(n_head * d_head, d_model, bias=False)
        self.drop = nn.Dropout(dropout)
        self.layer_norm = nn.LayerNorm(d_model)
        self.r_w_bias = nn.Parameter(torch.zeros(n_head, d_head))
        self.r_r_bias = nn.Parameter(torch.zeros(n_head, d_head))
        self.scale = 1 / d_head**0.5

    @staticmethod
    def _rel_shift(x):
        zero_pad = torch.zeros((x.size(0), 1, *x.size()[2:]), device=x.device, dtype=x.dtype)
        x_padded = torch.cat([zero_pad, x], dim=1)
        x_padded = x_padded.view(x.size(1) + 1, x.size(0), *x.size()[2:])
        return x_padded[1:].view_as(x)

    def forward(self, w, r, attn_mask, mems):
        qlen, rlen, bsz = w.size(0), r.size(0), w.size(1)
        cat = w if mems is None else torch.cat([mems, w], 0)
        w_heads = self.qkv_net(cat)
        r_head_k = self.r_net(r)
        w_head_q, w_head_k, w_head_v = torch.chunk(w_heads, 3, dim=-1)
        w_head_q = w_head_q[-qlen:]
        klen = w_head_k.size(0)
        w_head_q = w_head_q.view(qlen, bsz, self.n_head, self.d_head)
        w_head_k = w_head_k.view(klen, bsz, self.n_head, self.d_head)
        w_head_v = w_head_v.view(klen, bsz, self.n_head, self.d_head)
        r_head_k = r_head_k.view(rlen, self.n_head, self.d_head)
        AC = torch.einsum("ibnd,jbnd->ijbn", (w_head_q + self.r_w_bias, w_head_k))
        BD = self._rel_shift(torch.einsum("ibnd,jnd->ijbn", (w_head_q + self.r_r_bias, r_head_k)))
        attn_score = (AC + BD) * self.scale
        attn_score = attn_score.float().masked_fill(attn_mask[:, :, None, None], -float("inf"))
        attn_prob = F.softmax(attn_score, dim=1)
        attn_vec = torch.einsum("ijbn,jbnd->ibnd", (attn_prob, w_head_v))
        attn_vec = attn_vec.contiguous().view(qlen, bsz, self.n_head * self.d_head)
        return self.layer_norm(w + self.drop(self.o_net(attn_vec)))


class RefLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.dec_attn = RefAttention(c.n_head, c.d_model, c.d_head, c.dropout)
        self.core = nn.Sequential(
            nn.Linear(c.d_model, c.d_inner),
            nn.ReLU(inplace=True),
            nn.Dropout(c.dropout),
            nn.Linear(c.d_inner, c.d_model),
            nn.Dropout(c.dropout),
        )
        self.ff_norm = nn.LayerNorm(c.d_model)

    def forward(self, w, r, mask, mems):
        out = self.dec_attn(w, r, mask, mems)
        return self.ff_norm(out + self.core(out))


class RefTransfoXL(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.word_emb = nn.Embedding(c.vocab_size, c.d_model)
        self.layers = nn.ModuleList(RefLayer(c) for _ in range(c.n_layer))
        self.out_bias = nn.Parameter(torch.zeros(c.vocab_size))
        self.drop = nn.Dropout(c.dropout)
        self.register_buffer(
            "inv_freq", 1 / (10000 ** (torch.arange(0.0, c.d_model, 2.0) / c.d_model))
        )

    def forward(self, data, target, mems):
        """data, target (T, B); mems: per layer (M, B, H) or None -> (loss, new mems)."""
        qlen, _ = data.size()
        mlen = mems[0].size(0) if mems is not None else 0
        klen = mlen + qlen
        word_emb = self.word_emb(data) * self.c.d_model**0.5
        mask = torch.triu(word_emb.new_ones(qlen, klen), diagonal=1 + mlen).bool()
        pos_seq = torch.arange(klen - 1, -1, -1.0, device=data.device)
        sinusoid = torch.ger(pos_seq, self.inv_freq)
        pos_emb = self.drop(torch.cat([sinusoid.sin(), sinusoid.cos()], dim=-1))
        core_out, hids = self.drop(word_emb), []
        for i, layer in enumerate(self.layers):
            hids.append(core_out)
            core_out = layer(core_out, pos_emb, mask, None if mems is None else mems[i])
        logits = F.linear(self.drop(core_out), self.word_emb.weight, self.out_bias)
        with torch.no_grad():  # _update_mems
            new_mems = []
            for i in range(len(hids)):
                cat = hids[i] if mems is None else torch.cat([mems[i], hids[i]], 0)
                new_mems.append(cat[max(0, klen - self.c.mem_len) :].detach())
        return F.cross_entropy(logits.flatten(0, 1), target.flatten()), new_mems


@torch.no_grad()
def reference_from(ours: TransfoXLLMHeadModel) -> RefTransfoXL:
    c = ours.config
    ref = RefTransfoXL(c)
    ref.word_emb.weight.copy_(ours.word_embeddings.weight)
    ref.out_bias.copy_(ours.bias)
    H = c.d_model
    for a, b in zip(ours.layers, ref.layers, strict=True):
        att, r = a.attention, b.dec_attn
        r.qkv_net.weight.copy_(torch.cat([att.q, att.k, att.v], 1).view(H, -1).t())
        r.r_net.weight.copy_(att.r.view(H, -1).t())
        r.o_net.weight.copy_(att.o.view(H, -1))
        r.r_w_bias.copy_(att.r_w_bias)
        r.r_r_bias.copy_(att.r_r_bias)
        r.layer_norm.load_state_dict(a.attention_norm.state_dict())
        b.ff_norm.load_state_dict(a.feed_forward_norm.state_dict())
        b.core[0].load_state_dict(a.feed_forward.up.state_dict())
        b.core[3].load_state_dict(a.feed_forward.down.state_dict())
    return ref


class Carried:
    """A side's loss over consecutive segments, keeping its memories between calls."""

    def __init__(self, model, ours: bool):
        self.model, self.ours, self.mems = model, ours, None

    def __call__(self, batch):
        x, y = batch
        if self.ours:
            out = self.model(x, self.mems, y, return_logits=False, sum_only=True)
            self.mems = out.mems
            return out.loss / y.numel()
        loss, self.mems = self.model(x.t(), y.t(), self.mems)
        return loss


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="transfo-xl-tiny")
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = lm_config(args.model, vocab_size=args.vocab_size)
    T, B = config.tgt_len, args.batch_size
    torch.manual_seed(0)
    ours = TransfoXLLMHeadModel(config)
    ref = reference_from(ours)
    g = torch.Generator().manual_seed(1)
    stream = torch.randint(0, config.vocab_size, (B, T * (args.batches + 1) + 1), generator=g)
    with torch.no_grad():  # the same weights: the same logits, with memory
        ours.eval(), ref.eval()
        a, b = Carried(ours, True), Carried(ref, False)
        for k in range(2):
            x, y = stream[:, k * T : (k + 1) * T], stream[:, k * T + 1 : (k + 1) * T + 1]
            assert torch.allclose(a((x, y)), b((x, y)), atol=1e-5)
    ours.train(), ref.train()
    sides = {"reference": Carried(ref, False), "muppets": Carried(ours, True)}
    steps = {name: timed_step(side, side.model) for name, side in sides.items()}
    batches = [
        (stream[:, k * T : (k + 1) * T], stream[:, k * T + 1 : (k + 1) * T + 1])
        for k in range(args.batches)
    ]
    for step in steps.values():
        step(batches[0])  # warm-up: allocator, kernels; then memories are full
    wall = {name: float("inf") for name in steps}
    cpu = dict(wall)
    for round_ in range(args.rounds):
        spent = {name: [0.0, 0.0] for name in steps}
        for batch in batches:
            for name in list(steps)[:: 1 if round_ % 2 else -1]:
                start, start_cpu = time.perf_counter(), time.process_time()
                steps[name](batch)
                spent[name][0] += time.perf_counter() - start
                spent[name][1] += time.process_time() - start_cpu
        for name, (w, c) in spent.items():
            wall[name] = min(wall[name], w / len(batches))
            cpu[name] = min(cpu[name], c / len(batches))
    print(
        f"{args.model} (d_model {config.d_model}, {config.n_layer} layers, vocab "
        f"{config.vocab_size}), batch {B} x tgt_len {T}, mem_len {config.mem_len}, "
        f"{args.threads} threads, torch {torch.__version__}"
    )
    print("| clock | reference tok/s | muppets tok/s | ratio |")
    print("| --- | --- | --- | --- |")
    for clock, seconds in (("wall", wall), ("CPU", cpu)):
        r, m = B * T / seconds["reference"], B * T / seconds["muppets"]
        print(f"| {clock} | {r:.0f} | {m:.0f} | {m / r:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
