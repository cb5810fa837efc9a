"""Reading a spec file (YAML or JSON, hardened), the starter spec and the JSON schemas."""
