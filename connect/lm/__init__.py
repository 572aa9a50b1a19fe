"""Language models (:mod:`connect.models.gpt2`): corpora, tasks, training, paths, alignment, LoRA and the
Hugging Face interchange."""
