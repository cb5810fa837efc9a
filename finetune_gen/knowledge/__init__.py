"""Facts, no decisions: architectures, the model and GPU catalogs, parameter counts, optimizers, prompts."""
