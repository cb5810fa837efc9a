"""The data shapes: the spec a user writes, the frozen plan, the output object (pydantic only)."""
