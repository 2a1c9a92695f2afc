"""The permutation LM objective's training path (tasks/permutation_lm.py): the NLL at the kept
targets only (no argmax, no logits kept) equals transformers' XLNetLMHeadModel loss and the
metrics path, gradients included, at a tiny random size."""

import pytest
import torch

from muppets.data.permutation import IGNORE_INDEX
from muppets.models.hf_xlnet import config_from_hf, state_dict_from_hf
from muppets.models.xlnet import XLNetLMHeadModel
from muppets.tasks.permutation_lm import XLNetPLMLoss

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("one_thread")

V, B, T, P = 50, 2, 8, 3


def inputs(generator):
    """Two rows: P one-hot targets each (the second row's last one a padding row, label
    IGNORE_INDEX), a perm_mask hiding every target from the others' content, two segments."""
    ids = torch.randint(0, V, (B, T), generator=generator)
    targets = torch.stack([torch.randperm(T, generator=generator)[:P] for _ in range(B)])
    mapping = torch.zeros(B, P, T).scatter_(2, targets[..., None], 1.0)
    mapping[1, P - 1] = 0.0
    labels = ids.gather(1, targets)
    labels[1, P - 1] = IGNORE_INDEX
    perm_mask = torch.zeros(B, T, T)
    perm_mask.scatter_(2, targets[:, None, :].expand(B, T, P), 1.0)
    segments = torch.tensor([[0] * 4 + [1] * 3 + [2]] * B)
    return ids, segments, torch.ones(B, T), perm_mask, mapping, labels


def test_training_path_equals_transformers_loss_and_the_logits_path_gradients():
    torch.manual_seed(0)
    config = transformers.XLNetConfig(
        vocab_size=V, d_model=32, n_layer=2, n_head=4, d_inner=48, initializer_range=0.3
    )
    theirs = transformers.XLNetLMHeadModel(config).eval()
    ours_config = config_from_hf(config.to_dict())
    model = XLNetLMHeadModel(ours_config)
    model.load_state_dict(state_dict_from_hf(theirs.state_dict(), ours_config))
    wrapped = XLNetPLMLoss(model).eval()
    ids, segments, mask, perm_mask, mapping, labels = inputs(torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = theirs(
            input_ids=ids,
            token_type_ids=segments,
            attention_mask=mask,
            perm_mask=perm_mask,
            target_mapping=mapping,
            labels=labels,
        ).loss
    results = {}
    for count_correct in (False, True):  # the training path, then the metrics path
        wrapped.zero_grad()
        args = (ids, segments, mask, perm_mask, mapping, labels, torch.tensor(True))
        loss, n, _ = wrapped(*args, torch.tensor(0), count_correct)
        loss.backward()
        grads = {name: p.grad.clone() for name, p in wrapped.named_parameters()}
        results[count_correct] = (loss.detach(), n, grads)
    (blocked, n, grads), (plain, n_plain, plain_grads) = results[False], results[True]
    assert n == n_plain == B * P - 1
    torch.testing.assert_close(blocked / n, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(blocked, plain, atol=1e-5, rtol=0)
    assert grads.keys() == plain_grads.keys() and "mlm_head.bias" in grads
    # training: the lookup's sparse rows were added into the head's dense gradient
    assert grads["encoder.word_embeddings.weight"].layout == torch.strided
    for name, grad in grads.items():
        torch.testing.assert_close(grad, plain_grads[name], atol=1e-5, rtol=1e-5)
