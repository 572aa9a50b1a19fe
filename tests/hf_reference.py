"""The reference every family is tested against: ``transformers`` itself, on CPU torch (the test extra installs both)."""

import numpy as np
import torch
import transformers

from connect.lm import huggingface


def hf_model(cfg, seed: int, scale: float = 0.3):
    """The ``transformers`` model of connect config ``cfg`` (its ``config.json`` as connect writes it), every weight —
    norm gains and biases too — randomised by ``scale`` · N(0, 1) on top of the init, in eval mode."""
    torch.manual_seed(seed)
    config = transformers.AutoConfig.for_model(**huggingface.config_to_hf(cfg))
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn_like(p))
    return model


def hf_logits(model, tokens) -> np.ndarray:
    """The model's float32 logits of integer ``tokens`` ``(B, T)``."""
    with torch.no_grad():
        return model(torch.tensor(np.asarray(tokens), dtype=torch.long)).logits.float().numpy()
