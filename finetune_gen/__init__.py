"""finetune-gen: from a short spec to a fine-tuning run folder that works the first time."""

__version__ = "0.1.0"
