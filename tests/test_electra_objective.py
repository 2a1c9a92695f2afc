"""ELECTRA's joint objective: masking as pretrain_helpers.mask, labels, gradients, the loop's
protocol, the loss against transformers' own ELECTRA losses, and the held-out metrics."""

import pytest
import torch

from muppets.models.electra import ElectraPretrainingModel
from muppets.tasks.electra_objective import ElectraObjective, electra_mask, restore_original
from muppets.tasks.objectives import IGNORE, total_loss
from muppets.training.loop import evaluate
from tests.test_electra_parity import hf_towers, tiny_config

CLS, SEP, MASK, PAD = 2, 3, 4, 0
SPECIALS = (CLS, SEP, MASK)


def batch_of(lengths, vocab=97, seed=0):
    """[CLS] w ... w [SEP] rows, right-padded; words drawn from 5..vocab-1."""
    g = torch.Generator().manual_seed(seed)
    B, T = len(lengths), max(lengths)
    ids = torch.randint(5, vocab, (B, T), generator=g)
    real = torch.arange(T)[None] < torch.tensor(lengths)[:, None]  # (B, T)
    ids[:, 0] = CLS
    ids[torch.arange(B), torch.tensor(lengths) - 1] = SEP
    ids = ids.masked_fill(~real, PAD)
    return {
        "input_ids": ids,
        "attention_mask": real.long(),
        "token_type_ids": torch.zeros_like(ids),
    }


def objective(seed=0, **kw):
    return ElectraObjective(MASK, SPECIALS, generator=torch.Generator().manual_seed(seed), **kw)


def test_masking_counts_candidates_and_shares_over_many_draws():
    b = batch_of([128, 40, 7, 3, 100])
    ids, mask = b["input_ids"], b["attention_mask"]
    g = torch.Generator().manual_seed(0)
    to_mask = kept = 0
    for _ in range(400):
        masked_ids, masked = electra_mask(
            ids, mask, mask_id=MASK, special_ids=SPECIALS, max_predictions=19, generator=g
        )
        # max(1, min(19, round(n * 0.15))): 128 -> 19 (cap), 40 -> 6, 7 -> 1 (round(1.05)),
        # 3 -> 1 (the floor of 1; round(0.45) = 0), 100 -> 15.
        assert masked.sum(1).tolist() == [19, 6, 1, 1, 15]
        assert (
            not (masked & ~mask.bool()).any()
            and not torch.isin(ids[masked], 2 + torch.arange(3)).any()
        )
        # [MASK] or unchanged: never a random token (no 10% random replacement as in BERT).
        assert torch.equal(masked_ids[~masked], ids[~masked])
        assert torch.all((masked_ids[masked] == MASK) | (masked_ids[masked] == ids[masked]))
        to_mask += int((masked_ids[masked] == MASK).sum())
        kept += int((masked_ids[masked] == ids[masked]).sum())
    assert to_mask + kept == 400 * 42
    assert (to_mask, kept) == (14277, 2523)  # 84.98% [MASK]; a change of rule moves it
    assert abs(to_mask / (400 * 42) - 0.85) < 0.01
    # Positions are uniform over the candidates: every word of the 7-token row is picked.
    picks = torch.zeros(7)
    for _ in range(500):
        _, masked = electra_mask(ids, mask, mask_id=MASK, special_ids=SPECIALS, generator=g)
        picks += masked[2, :7].float()
    assert picks[0] == picks[6] == 0 and picks[1:6].min() > 70  # 100 expected each


def test_pipeline_masking_is_undone_before_electra_masks():
    b = batch_of([9, 6])
    labels = torch.full_like(b["input_ids"], IGNORE)
    labels[0, 3], labels[1, 2] = b["input_ids"][0, 3], b["input_ids"][1, 2]
    masked = b["input_ids"].clone()
    masked[0, 3], masked[1, 2] = MASK, 50  # BERT's [MASK] and random replacement
    assert torch.equal(
        restore_original({**b, "input_ids": masked, "labels": labels}), b["input_ids"]
    )


def test_labels_only_where_the_sample_differs_and_losses_match_transformers():
    torch.manual_seed(0)
    config = tiny_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = ElectraPretrainingModel(config)
    b = batch_of([20, 13, 9])
    sums = objective(seed=5)(model, b)
    # The same draws by hand: mask, then sample, from one generator.
    g = torch.Generator().manual_seed(5)
    masked_ids, masked = electra_mask(
        b["input_ids"], b["attention_mask"], mask_id=MASK, special_ids=SPECIALS, generator=g
    )
    out = model(masked_ids, b["attention_mask"], None, masked, b["input_ids"], 1.0, g)
    real = b["attention_mask"].bool()
    fake = b["input_ids"].masked_scatter(masked, out.sampled)
    assert torch.equal(out.replaced, fake.ne(b["input_ids"])[real])
    assert not out.replaced[~masked[real]].any()  # unmasked tokens are never "replaced"
    # A generator sure of word 7 samples 7: where the original is 7 the label is 0 ("original").
    sure = ElectraPretrainingModel(config)
    with torch.no_grad():
        sure.generator_head.bias.fill_(-1e4)
        sure.generator_head.bias[7] = 1e4
    sevens = b["input_ids"].clone()
    sevens[:, 1::2] = torch.where(real[:, 1::2] & (sevens[:, 1::2] != SEP), 7, sevens[:, 1::2])
    g = torch.Generator().manual_seed(0)
    ids7, masked7 = electra_mask(
        sevens, b["attention_mask"], mask_id=MASK, special_ids=SPECIALS, generator=g
    )
    out7 = sure(ids7, b["attention_mask"], None, masked7, sevens, 1.0, g)
    assert torch.all(out7.sampled == 7)
    assert torch.equal(out7.replaced, (masked7 & sevens.ne(7))[real])
    assert 0 < int(out7.replaced.sum()) < int(masked7.sum())
    counts = objective().count_targets(b)
    assert counts == {"mlm": int(masked.sum()), "disc": int(real.sum())}
    # transformers' losses: ElectraForMaskedLM's CE at masked positions, ElectraForPreTraining's
    # BCE over the attention mask; total = MLM + 50 x BCE (configure_pretraining.py).
    disc, gen = hf_towers(model, config)
    labels = torch.where(masked, b["input_ids"], IGNORE)
    gen_loss = gen(input_ids=masked_ids, attention_mask=b["attention_mask"], labels=labels).loss
    disc_loss = disc(
        input_ids=fake, attention_mask=b["attention_mask"], labels=fake.ne(b["input_ids"]).long()
    ).loss
    expected = gen_loss + 50 * disc_loss
    assert abs(total_loss(sums, counts).item() - expected.item()) <= 1e-4  # ~40: float32 ulp 4e-6


def test_no_gradient_reaches_the_generator_from_the_discriminator_loss():
    torch.manual_seed(1)
    model = ElectraPretrainingModel(tiny_config())
    sums = objective()(model, batch_of([16, 11]))
    sums["disc"].backward(retain_graph=True)
    generator_side = [*model.generator.layers.parameters(), *model.generator_head.parameters()]
    generator_side += list(model.generator.embeddings_project.parameters())
    assert all(p.grad is None for p in generator_side)
    # The shared embeddings learn from both losses, as in the reference (tie_embeddings).
    assert model.discriminator.embeddings.word_embeddings.weight.grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)
    sums["mlm"].backward()
    assert all(p.grad is None for p in model.discriminator.layers.parameters())
    assert all(p.grad is not None for p in generator_side)


def test_every_trainable_parameter_gets_a_gradient():
    torch.manual_seed(2)
    model = ElectraPretrainingModel(tiny_config())
    sums = objective()(model, batch_of([16, 11, 5]))
    sum(sums.values()).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []
    assert {n for n, p in model.named_parameters() if not p.requires_grad} == {
        "discriminator.pooler.dense.weight",
        "discriminator.pooler.dense.bias",
        "generator.pooler.dense.weight",
        "generator.pooler.dense.bias",
    }


def test_micro_batch_counts_add_up_to_the_big_batch():
    """Counts depend on each row's real tokens only, never on the draw or the padding, so k
    micro-batches divide by exactly what one big batch divides by."""
    big = batch_of([30, 12, 9, 25])
    obj = objective()
    halves = [{k: v[i : i + 2, : [30, 25][i // 2]] for k, v in big.items()} for i in (0, 2)]
    parts = [obj.count_targets(h) for h in halves]
    whole = obj.count_targets(big)
    assert whole == {"mlm": 4 + 2 + 1 + 4, "disc": 76}  # round(4.5) = 4: half to even, as tf.round
    assert {k: parts[0][k] + parts[1][k] for k in whole} == whole


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_held_out_metrics_and_auc():
    from sklearn.metrics import roc_auc_score

    torch.manual_seed(3)
    model = ElectraPretrainingModel(tiny_config())
    obj = objective()
    batches = [batch_of([20, 13, 9], seed=s) for s in range(3)]
    scores = evaluate(model, obj, batches, torch.device("cpu"))
    assert set(scores) >= {"mlm_accuracy", "disc_accuracy", "disc_auc", "replaced_share"}
    assert scores == evaluate(model, obj, batches, torch.device("cpu"))  # fixed held-out draws
    # The AUC is sklearn's over the logits of every held-out token.
    logits, labels, replaced, real = [], [], 0, 0
    with torch.no_grad():
        for b in batches:
            seed = obj.eval_seed * 1_000_003 + int(b["input_ids"].sum())
            g = torch.Generator().manual_seed(seed)
            out = obj._forward(model.eval(), b, g)[0]
            logits.append(out.disc_logits)
            labels.append(out.replaced)
            replaced, real = replaced + int(out.replaced.sum()), real + out.replaced.numel()
    exact = roc_auc_score(torch.cat(labels).numpy(), torch.cat(logits).numpy())
    assert scores["disc_auc"] == exact
    assert scores["replaced_share"] == replaced / real
    assert abs(scores["loss"] - scores["mlm_loss"] - 50 * scores["disc_bce"]) < 1e-9
