"""Memory, time, storage and cost: formulas and recorded measurements, no decisions."""
