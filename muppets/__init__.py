"""muppets: pretrain, fine-tune, evaluate and serve the ELMo-to-BERT family of text encoders."""

__version__ = "0.1.0"
