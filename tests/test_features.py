"""Feature-based transfer: ScalarMix, the frozen biLM, and the small task models on top."""

import pytest
import torch
import torch.nn.functional as F

from muppets.models.elmo import PRESETS, ElmoBiLM, ElmoConfig
from muppets.tasks.features import (
    BagOfEmbeddingsClassifier,
    BiLSTMClassifier,
    BiLSTMTagger,
    EmbeddingFeatures,
    FrozenFeatures,
    ScalarMix,
    TokenSoftmaxTagger,
    masked_layer_norm,
)
from muppets.tokenization.characters import batch_to_char_ids

SENTENCES = [["the", "cat", "sat", "down", "."], ["hi", "!"], ["a", "b", "c", "d"]]


def word_batch(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (B, T) ids (padding id 0) and mask."""
    T = max(map(len, rows))
    ids = torch.tensor([row + [0] * (T - len(row)) for row in rows])
    return ids, ids.ne(0)


ROWS = [[3, 4, 5, 6, 7], [8, 9], [10, 11, 12, 13]]
PAIRS = [[5, 6], [7, 8, 9, 10, 11], [12]]


def embedding_source(dim: int = 6) -> EmbeddingFeatures:
    torch.manual_seed(0)
    return EmbeddingFeatures(20, dim, padding_idx=0)


def frozen_elmo(**mix) -> FrozenFeatures:
    torch.manual_seed(0)
    config = ElmoConfig(**{**PRESETS["elmo-tiny"], "dropout": 0.3})
    return FrozenFeatures(ElmoBiLM(config), **mix)


def layers_and_mask():
    g = torch.Generator().manual_seed(0)
    layers = [torch.randn(2, 4, 5, generator=g) for _ in range(3)]
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)
    return layers, mask


def test_scalar_mix_starts_as_the_mean_and_weights_by_softmax():
    layers, mask = layers_and_mask()
    mix = ScalarMix(3)
    torch.testing.assert_close(mix(layers, mask), sum(layers) / 3)
    with torch.no_grad():
        mix.scalar_parameters.copy_(torch.tensor([1.0, 0.0, -1.0]))
        mix.gamma.fill_(2.0)
    w = torch.softmax(torch.tensor([1.0, 0.0, -1.0]), 0)
    torch.testing.assert_close(
        mix(layers), 2.0 * (w[0] * layers[0] + w[1] * layers[1] + w[2] * layers[2])
    )


def test_layer_norm_pools_real_positions_and_ignores_padding():
    layers, mask = layers_and_mask()
    real = torch.cat([layers[0][0], layers[0][1, :2]])  # (6, 5): the real positions only
    expected = (layers[0] - real.mean()) / real.var(unbiased=False).sqrt()
    normed = masked_layer_norm(layers[0], mask)
    torch.testing.assert_close(normed[mask], expected[mask])
    changed = [h.clone() for h in layers]
    for h in changed:
        h[1, 2:] = 100.0  # padding
    mix = ScalarMix(3, do_layer_norm=True)
    torch.testing.assert_close(mix(changed, mask)[mask], mix(layers, mask)[mask])


def test_only_the_mix_and_task_model_train_on_a_frozen_bilm():
    source = frozen_elmo()
    model = BiLSTMClassifier(source, hidden_size=4, num_labels=3, dropout=0.1).train()
    bilm = source.encoder
    before = {k: v.clone() for k, v in bilm.state_dict().items()}
    assert not bilm.training and all(not p.requires_grad for p in bilm.parameters())
    char_ids = batch_to_char_ids(SENTENCES)
    mask = char_ids.ne(0).any(-1)
    # frozen = eval mode: the biLM's dropout (0.3) is off even though the model trains
    torch.testing.assert_close(bilm(char_ids, mask)[2], bilm(char_ids, mask)[2])
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.1)
    loss = F.cross_entropy(model(char_ids, mask), torch.tensor([0, 1, 2]))
    loss.backward()
    assert source.mix.gamma.grad is not None and source.mix.gamma.grad.abs() > 0
    assert source.mix.scalar_parameters.grad.abs().min() > 0
    assert all(p.grad is None for p in bilm.parameters())
    mix_before = source.mix.scalar_parameters.detach().clone()
    optimizer.step()
    for name, value in bilm.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert not torch.equal(source.mix.scalar_parameters, mix_before)


def test_boundaries_removed_after_the_mix():
    source = frozen_elmo(remove_boundaries=True).eval()
    char_ids = batch_to_char_ids(SENTENCES)  # (3, 7, 50) with <S> ... </S>
    mask = char_ids.ne(0).any(-1)
    features, new_mask = source(char_ids, mask)
    assert features.shape == (3, 5, source.output_dim)
    assert new_mask.sum(1).tolist() == [5, 2, 4]
    mixed = source.mix(source.encoder(char_ids, mask), mask)
    torch.testing.assert_close(features[1, :2], mixed[1, 1:3])
    assert features[1, 2:].eq(0).all()


@pytest.mark.parametrize("kind", ["bilstm", "bag"])
@pytest.mark.parametrize("pairs", [False, True], ids=["single", "pairs"])
def test_classifier_batched_equals_one_at_a_time(kind, pairs):
    source = embedding_source()
    if kind == "bilstm":
        model = BiLSTMClassifier(source, 4, 3, pairs=pairs, mlp_hidden_size=5).eval()
    else:
        model = BagOfEmbeddingsClassifier(source, 3, pairs=pairs, mlp_hidden_size=5).eval()
    extra = list(word_batch(PAIRS)) if pairs else []
    batched = model(*word_batch(ROWS), *extra)
    for b in range(3):
        extra = list(word_batch([PAIRS[b]])) if pairs else []
        alone = model(*word_batch([ROWS[b]]), *extra)
        torch.testing.assert_close(batched[b], alone[0], atol=1e-6, rtol=0)


def test_bilstm_final_states_are_at_the_real_ends():
    model = BiLSTMClassifier(embedding_source(), 4, 2).eval()
    ids, mask = word_batch(ROWS)
    pooled = model.encode(ids, mask)  # (B, 8)
    for b, row in enumerate(ROWS):
        x = model.features.embedding(torch.tensor([row]))
        states, _ = model.bilstm.lstm(x)  # (1, len, 8), unpadded
        torch.testing.assert_close(pooled[b, :4], states[0, -1, :4])  # forward at last token
        torch.testing.assert_close(pooled[b, 4:], states[0, 0, 4:])  # backward at first


def test_bag_of_embeddings_pair_combination_by_hand():
    model = BagOfEmbeddingsClassifier(embedding_source(), 2, pairs=True).eval()
    a, b = torch.tensor([[3, 4, 0]]), torch.tensor([[5, 0, 0]])
    u = model.features.embedding.weight[[3, 4]].mean(0)
    v = model.features.embedding.weight[5]
    linear = model.head.mlp[-1]
    expected = linear(torch.cat([u, v, (u - v).abs(), u * v]))
    torch.testing.assert_close(model(a, a.ne(0), b, b.ne(0))[0], expected)
    with pytest.raises(ValueError, match="pair head"):
        model(a, a.ne(0))


def test_tagger_batched_equals_one_at_a_time():
    model = BiLSTMTagger(embedding_source(), 4, 5).eval()
    logits = model(*word_batch(ROWS))
    assert logits.shape == (3, 5, 5)
    for b, row in enumerate(ROWS):
        alone = model(*word_batch([row]))[0]
        torch.testing.assert_close(logits[b, : len(row)], alone, atol=1e-6, rtol=0)


def test_token_softmax_tagger_sees_only_each_words_own_features():
    model = TokenSoftmaxTagger(embedding_source(), 5).eval()
    ids, mask = word_batch(ROWS)
    logits = model(ids, mask)  # (3, 5, 5)
    # by hand: one linear map of each word's embedding, whatever its neighbours
    expected = model.output(model.features.embedding.weight[ids])
    torch.testing.assert_close(logits[mask], expected[mask], atol=1e-6, rtol=0)
    assert not any("lstm" in name for name in model.state_dict())
