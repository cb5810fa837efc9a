"""The file system: safe reads of user files and atomic writes of run folders."""
