"""`muppets prepare` with entity units: a fine-tuned NER model tags the corpus as it is tokenized.

ERNIE 1.0 (Sun et al. 2019, section 3.2.3) masks named entities found by a tagger; here the tagger
is any `muppets finetune --task conll2003` output (or a transformers token-classification model
that `muppets predict` reads), run through the same featurizing and decoding as `muppets predict`
(tasks/prediction.py: each word gets its first sub-token's tag). Its entities become the
"entity" units of the shards (data/boundaries.py).
"""

from __future__ import annotations

from muppets.data.boundaries import WordTagger
from muppets.data.prepare import PrepareConfig, prepare_corpus
from muppets.data.readers.conll import Sentence
from muppets.errors import ConfigError
from muppets.tasks.prediction import predict
from muppets.training.device import pick_device
from muppets.training.pretrained import load_finetuned


def load_entity_tagger(path: str, device: str = "auto", batch_size: int = 128) -> WordTagger:
    """words of each sentence -> tags of each word, by the fine-tuned tagger at `path`."""
    model, setup, tokenizer = load_finetuned(path)
    if setup.head != "tagging":
        raise ConfigError(
            f"entities_model: {path} is a {setup.head} model ({setup.task}); "
            "give a tagger fine-tuned on conll2003"
        )
    where = pick_device(device)
    model = model.to(where)  # fp32: a tagger's argmax, once per sentence of the corpus

    def tag(sentences: list[list[str]]) -> list[list[str]]:
        keep = [i for i, words in enumerate(sentences) if words]
        examples = [Sentence(sentences[i], ["O"] * len(sentences[i]), path, 0) for i in keep]
        tags: list[list[str]] = [[] for _ in sentences]
        if examples:
            features = setup.featurize(examples, tokenizer, labelled=False)
            predicted, _ = predict(model, setup, examples, features, tokenizer.pad_id, batch_size)
            for i, row in zip(keep, predicted, strict=True):
                tags[i] = row
        return tags

    return tag


def prepare(config: PrepareConfig) -> dict:
    """prepare_corpus, with the entity tagger of `config.entities_model` loaded when given."""
    entities = load_entity_tagger(config.entities_model) if config.entities_model else None
    return prepare_corpus(config, entities)
