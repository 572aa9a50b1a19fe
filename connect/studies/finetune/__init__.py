"""The finetuning study (Liu, Wang & Zhang, arXiv 2605.06654): ``connect study finetune``."""
