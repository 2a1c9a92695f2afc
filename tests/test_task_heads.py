"""Task heads (classification, span QA, tagging): parity with transformers' BertFor* / RobertaFor*
classes at a tiny random size, on padded batches; batched == one at a time; losses by hand and
against transformers; every trainable parameter gets a gradient; conversion round trip."""

import pytest
import torch

from muppets.errors import ConfigError, InputError
from muppets.models.bert import BertModel
from muppets.models.hf import config_from_hf
from muppets.tasks.classification import (
    HF_CLASSIFIER_KEYS,
    ClassificationObjective,
    SequenceClassifier,
    class_predictions,
    classifier_state_dict_from_hf,
    task_state_dict_to_hf,
)
from muppets.tasks.objectives import total_loss
from muppets.tasks.span_qa import (
    HF_SPAN_QA_KEYS,
    SpanQAHead,
    SpanQAObjective,
    span_qa_state_dict_from_hf,
)
from muppets.tasks.tagging import (
    HF_TAGGER_KEYS,
    TaggingObjective,
    TokenTagger,
    tagger_state_dict_from_hf,
)

transformers = pytest.importorskip("transformers")

LENGTHS = [7, 4, 5]  # the first sequence has no padding
POOLER = ["encoder.pooler.dense.weight", "encoder.pooler.dense.bias"]


def hf_config(model_type: str, num_labels: int = 3):
    sizes = dict(
        vocab_size=64,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=num_labels,
    )
    if model_type == "bert":
        return transformers.BertConfig(max_position_embeddings=32, **sizes)
    return transformers.RobertaConfig(max_position_embeddings=34, type_vocab_size=1, **sizes)


def make_batch(pad_id: int, two_segments: bool) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    B, T = len(LENGTHS), max(LENGTHS)
    mask = (torch.arange(T) < torch.tensor(LENGTHS)[:, None]).long()  # (B, T)
    ids = torch.randint(2, 64, (B, T), generator=g).masked_fill(mask == 0, pad_id)
    types = torch.zeros_like(ids)
    if two_segments:
        types[:, 3:] = 1
        types = types * mask
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "token_type_ids": types,
        "labels": torch.tensor([2, -100, 0]),  # one example without a label
        "start_positions": torch.tensor([1, 0, 2]),
        "end_positions": torch.tensor([3, 0, 4]),
        "tag_labels": torch.randint(0, 3, (B, T), generator=g).masked_fill(mask == 0, -100),
    }


# head: (transformers class name, our head builder, HF -> ours, key rows)
HEADS = {
    "classification": (
        "ForSequenceClassification",
        lambda e, k: SequenceClassifier(e, k),
        classifier_state_dict_from_hf,
        HF_CLASSIFIER_KEYS,
    ),
    "span_qa": (
        "ForQuestionAnswering",
        lambda e, k: SpanQAHead(e),
        span_qa_state_dict_from_hf,
        HF_SPAN_QA_KEYS,
    ),
    "tagging": (
        "ForTokenClassification",
        lambda e, k: TokenTagger(e, k),
        tagger_state_dict_from_hf,
        HF_TAGGER_KEYS,
    ),
}


def converted_pair(model_type: str, head: str, num_labels: int = 3):
    """A random transformers task model and ours loaded from its state dict, both in eval mode."""
    torch.manual_seed(0)
    name, build, from_hf, _ = HEADS[head]
    hf_cfg = hf_config(model_type, num_labels)
    reference = getattr(transformers, model_type.capitalize() + name)(hf_cfg).eval()
    config = config_from_hf(hf_cfg.to_dict())
    ours = build(BertModel(config), num_labels).eval()
    missing, unexpected = ours.load_state_dict(
        from_hf(reference.state_dict(), config), strict=False
    )
    # HF's QA and token classification models have no pooler; ours keeps a frozen one
    assert (missing, unexpected) == ([] if head == "classification" else POOLER, [])
    return reference, ours, config


@pytest.mark.parametrize("model_type", ["bert", "roberta"])
@pytest.mark.parametrize("head", list(HEADS))
def test_logits_and_losses_equal_transformers_on_padded_batches(model_type, head):
    # transformers sizes qa_outputs by num_labels (2 = start, end)
    reference, ours, config = converted_pair(model_type, head, 2 if head == "span_qa" else 3)
    batch = make_batch(config.pad_token_id, two_segments=model_type == "bert")
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    real = batch["attention_mask"].bool()
    with torch.no_grad():
        theirs, mine = reference(**inputs), ours(**inputs)
    if head == "classification":
        torch.testing.assert_close(mine, theirs.logits, atol=1e-5, rtol=0)
        objective, labels = ClassificationObjective(), {"labels": batch["labels"]}
    elif head == "tagging":
        torch.testing.assert_close(mine[real], theirs.logits[real], atol=1e-5, rtol=0)
        batch["labels"] = batch["tag_labels"]
        objective, labels = TaggingObjective(), {"labels": batch["labels"]}
    else:
        for m, t in ((mine.start, theirs.start_logits), (mine.end, theirs.end_logits)):
            torch.testing.assert_close(m[real], t[real], atol=1e-5, rtol=0)
            assert (m[~real] == torch.finfo(m.dtype).min).all()  # padding never wins
        # transformers scores padding too, so the losses agree on the unpadded sequence only
        batch, inputs = ({k: v[:1] for k, v in d.items()} for d in (batch, inputs))
        positions = ("start_positions", "end_positions")
        objective, labels = SpanQAObjective(), {k: batch[k] for k in positions}
    with torch.no_grad():
        loss = total_loss(objective(ours, batch), objective.count_targets(batch))
        their_loss = reference(**inputs, **labels).loss
    torch.testing.assert_close(loss, their_loss, atol=1e-6, rtol=0)
    # ours -> HF gives back transformers' own state dict (buffers aside)
    expected = {k: v for k, v in reference.state_dict().items() if not k.endswith("_ids")}
    back = task_state_dict_to_hf(ours.state_dict(), config, HEADS[head][3])
    assert back.keys() == expected.keys()
    assert all(torch.equal(back[k], expected[k]) for k in expected)


def test_regression_loss_is_mse_by_hand_and_equals_transformers():
    reference, ours, config = converted_pair("bert", "classification", num_labels=1)
    batch = make_batch(config.pad_token_id, two_segments=True)
    batch["labels"] = torch.tensor([0.5, 4.25, 2.0])
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    objective = ClassificationObjective(regression=True)
    with torch.no_grad():
        scores = ours(**inputs)[:, 0]  # (B,)
        sums, counts = objective(ours, batch), objective.count_targets(batch)
        their_loss = reference(**inputs, labels=batch["labels"]).loss
    by_hand = sum((s - y) ** 2 for s, y in zip(scores.tolist(), [0.5, 4.25, 2.0], strict=True)) / 3
    assert counts == {"regression": 3}
    assert float(sums["regression"]) / 3 == pytest.approx(by_hand, abs=1e-5)
    torch.testing.assert_close(total_loss(sums, counts), their_loss, atol=1e-6, rtol=0)
    torch.testing.assert_close(class_predictions(ours(**inputs)), scores)
    with pytest.raises(ConfigError, match="objective 'classification' does not fit a model with 1"):
        ClassificationObjective()(ours, batch)


def build_heads():
    """Every head (and every pooling) over one tiny random BERT, with its objective."""
    torch.manual_seed(1)
    config = config_from_hf(hf_config("bert").to_dict())
    heads = [
        (SequenceClassifier(BertModel(config), 3, pooling=p), ClassificationObjective(), "labels")
        for p in ("pooler", "cls", "mean")
    ]
    heads.append((SpanQAHead(BertModel(config)), SpanQAObjective(), None))
    heads.append((TokenTagger(BertModel(config), 3), TaggingObjective(), "tag_labels"))
    return config, heads


def test_batched_equals_one_at_a_time():
    config, heads = build_heads()
    batch = make_batch(config.pad_token_id, two_segments=True)
    for model, objective, label_key in heads:
        model.eval()
        full = dict(batch, labels=batch[label_key]) if label_key else batch
        with torch.no_grad():
            batched_out, batched_loss = model(**_inputs(full)), objective(model, full)
        loss_sum = 0.0
        for i, n in enumerate(LENGTHS):
            single = {
                k: v[i : i + 1, :n] if v.dim() == 2 else v[i : i + 1] for k, v in full.items()
            }
            with torch.no_grad():
                out = model(**_inputs(single))
                loss_sum += float(objective(model, single)[objective.name])
            head_is_qa = isinstance(model, SpanQAHead)
            if isinstance(model, SequenceClassifier):
                torch.testing.assert_close(out, batched_out[i : i + 1], atol=1e-5, rtol=0)
                assert torch.equal(
                    class_predictions(out), class_predictions(batched_out[i : i + 1])
                )
            else:
                pairs = zip(out, batched_out, strict=True) if head_is_qa else [(out, batched_out)]
                for a, b in pairs:  # (start, end) or the tag logits
                    b = b[i : i + 1, :n]
                    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
                    assert torch.equal(a.argmax(-1), b.argmax(-1))
        # padding changes no loss: the QA softmax skips padded positions
        assert float(batched_loss[objective.name]) == pytest.approx(loss_sum, abs=1e-5)


def _inputs(batch):
    return {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}


def test_every_trainable_parameter_gets_a_gradient():
    config, heads = build_heads()
    batch = make_batch(config.pad_token_id, two_segments=True)
    for model, objective, label_key in heads:
        full = dict(batch, labels=batch[label_key]) if label_key else batch
        model.train()
        total_loss(objective(model, full), objective.count_targets(full)).backward()
        frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
        uses_pooler = getattr(model, "pooling", None) == "pooler"
        assert frozen == ([] if uses_pooler else POOLER)  # the pooler is frozen when unused
        no_grad = [
            n
            for n, p in model.named_parameters()
            if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)
        ]
        assert no_grad == []


def test_errors_name_the_problem():
    config = config_from_hf(hf_config("bert").to_dict())
    with pytest.raises(ConfigError, match="pooling='max': must be one of pooler, cls, mean"):
        SequenceClassifier(BertModel(config), 2, pooling="max")
    with pytest.raises(ConfigError, match="num_labels=0"):
        TokenTagger(BertModel(config), 0)
    torch.manual_seed(0)
    sd = transformers.BertForTokenClassification(hf_config("bert")).state_dict()
    del sd["classifier.bias"]
    with pytest.raises(InputError, match=r"missing \['classifier.bias'\], unexpected \[\]"):
        tagger_state_dict_from_hf(sd, config, path="model.safetensors")
