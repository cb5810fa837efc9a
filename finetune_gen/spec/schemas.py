"""JSON Schemas of the spec and the output object, generated from the pydantic models.

The committed copies in `schemas/` are checked against these by the test suite.
"""

from __future__ import annotations

import json

from finetune_gen.models.output import OutputObject
from finetune_gen.models.spec import Spec

SCHEMA_FILES = {"spec": "spec.schema.json", "output": "output.schema.json"}


def schema_text(which: str) -> str:
    model = {"spec": Spec, "output": OutputObject}[which]
    schema = model.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"finetune-gen/{SCHEMA_FILES[which]}"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def write_schemas(folder: str = "schemas") -> list[str]:
    """Rewrite the committed schema files (run from the repository root)."""
    from pathlib import Path

    written = []
    for which, name in SCHEMA_FILES.items():
        path = Path(folder) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(schema_text(which), encoding="utf-8")
        written.append(str(path))
    return written


if __name__ == "__main__":
    print("\n".join(write_schemas()))
