"""One registry entry per user-facing choice: methods, tasks, dataset formats, distribution."""
