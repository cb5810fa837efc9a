"""Reading and checking datasets: streaming readers, checks, cleaning, splits, contamination."""
