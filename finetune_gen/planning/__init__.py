"""Every decision of the plan, with its reason: method, fallbacks, hyperparameters, guards."""
