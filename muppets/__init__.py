"""muppets: pretrain, fine-tune, evaluate and serve the ELMo-to-BERT family of text encoders.

The Python API is the handful of names below, each the same object as in its module: every CLI
command is `function(Config(...))` here (`muppets pretrain` is `pretrain(PretrainConfig(...))`),
and the loaders read a checkpoint of any family. Names load on first use (PEP 562), so
`import muppets` imports no torch. See the README's "Python API" section for an example.
"""

__version__ = "0.1.0"

# public name -> the module that defines it
_API = {
    # checkpoints of any family: (model, config, tokenizer or vocabulary)
    "load_pretrained": "muppets.training.pretrained",
    "load_elmo": "muppets.training.pretrained",
    "load_finetuned": "muppets.training.pretrained",
    # tokenizers and prepared shards
    "load_tokenizer": "muppets.tokenization.wordpiece",
    "WordPieceTokenizer": "muppets.tokenization.wordpiece",
    "TokenizerTrainConfig": "muppets.data.prepare",
    "train_tokenizer": "muppets.data.prepare",
    "PrepareConfig": "muppets.data.prepare",
    "prepare_corpus": "muppets.data.prepare",
    # recipes: a config object in, results out
    "PretrainConfig": "muppets.recipes.pretrain",
    "pretrain": "muppets.recipes.pretrain",
    "ElmoPretrainConfig": "muppets.recipes.pretrain_elmo",
    "pretrain_elmo": "muppets.recipes.pretrain_elmo",
    "FinetuneConfig": "muppets.recipes.finetune",
    "finetune": "muppets.recipes.finetune",
    "EvaluateConfig": "muppets.recipes.evaluate",
    "run_evaluate": "muppets.recipes.evaluate",
    "PredictConfig": "muppets.recipes.evaluate",
    "run_predict": "muppets.recipes.evaluate",
    "ExtractConfig": "muppets.recipes.extract",
    "extract": "muppets.recipes.extract",
    "ConvertConfig": "muppets.recipes.convert",
    "convert": "muppets.recipes.convert",
    "FillMaskConfig": "muppets.recipes.fill_mask",
    "run_fill_mask": "muppets.recipes.fill_mask",
    "fill_mask": "muppets.recipes.fill_mask",
    "QuickstartConfig": "muppets.quickstart.run",
    "run_quickstart": "muppets.quickstart.run",
    "from_options": "muppets.training.options",  # a recipe config from flat option names
    # models
    "BertConfig": "muppets.models.bert",
    "BertModel": "muppets.models.bert",
    "PretrainingModel": "muppets.models.heads",
    "preset_config": "muppets.models.registry",
    "build_encoder": "muppets.models.registry",
    "build_pretraining_model": "muppets.models.registry",
    "ElmoConfig": "muppets.models.elmo",
    "ElmoBiLM": "muppets.models.elmo",
    # errors: every one a MuppetsError; InputError names the file and line
    "MuppetsError": "muppets.errors",
    "InputError": "muppets.errors",
    "ConfigError": "muppets.errors",
}

__all__ = ["__version__", "SAMPLES", *_API]


def __getattr__(name: str):
    if name == "SAMPLES":  # the bundled Wikipedia slice and SST-2 sample
        from pathlib import Path

        return Path(__file__).resolve().parent / "samples"
    if name not in _API:
        raise AttributeError(f"module 'muppets' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_API[name]), name)
    globals()[name] = value  # the next lookup does not come here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
