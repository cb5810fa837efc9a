"""From a plan to file texts: templates, quoting per output language, black."""
