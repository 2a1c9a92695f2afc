"""Zero-shot cross-lingual evaluation (`muppets zero-shot`): fine-tune on English with the
finetune recipe, score every language with the evaluate recipe; Tatoeba retrieval."""
