"""Config reference generated from the JSON schema, kept in README.md between markers.

`python -m segfusion.config_docs` prints the reference; ``--write README.md`` replaces the
block between ``<!-- config-reference:start -->`` and ``<!-- config-reference:end -->``.
A test fails when the README is out of date.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from segfusion.config import _resolve, load_schema

START, END = "<!-- config-reference:start -->", "<!-- config-reference:end -->"
SCHEMA = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"


def _type(s: dict) -> str:
    if "enum" in s:
        return " \\| ".join(f"`{v}`" for v in s["enum"])
    t = s.get("type", "")
    if isinstance(t, list):
        return " or ".join(t)
    if t == "array" and "items" in s:
        return f"list of {_type(s['items']) or 'values'}"
    return t


def _rows(schema: dict, root: dict, prefix: str) -> list[tuple[str, str, str, str]]:
    rows = []
    for key, sub in schema.get("properties", {}).items():
        default = sub.get("default", _resolve(sub, root).get("default", ""))
        desc = sub.get("description", "") or _resolve(sub, root).get("description", "")
        sub = _resolve(sub, root)
        path = f"{prefix}{key}"
        desc = " ".join(str(desc).split()).replace("|", "\\|")
        rows.append((path, _type(sub), "" if default == "" else json.dumps(default), desc))
        if "properties" in sub:
            rows += _rows(sub, root, path + ".")
        extra = sub.get("additionalProperties")
        if isinstance(extra, dict):
            extra = _resolve(extra, root)
            if "properties" in extra:
                rows += _rows(extra, root, path + ".<name>.")
    return rows


def render(schema_path: Path = SCHEMA) -> str:
    schema = load_schema(schema_path)
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for path, typ, default, desc in _rows(schema, schema, ""):
        lines.append(f"| `{path}` | {typ} | {f'`{default}`' if default else ''} | {desc} |")
    return "\n".join(lines)


def replace_block(text: str, block: str) -> str:
    if START not in text or END not in text:
        raise ValueError(f"README has no {START} ... {END} block")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{block}\n{END}{tail}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", help="README to update in place")
    args = parser.parse_args()
    block = render()
    if args.write:
        path = Path(args.write)
        path.write_text(replace_block(path.read_text(), block))
    else:
        print(block)


if __name__ == "__main__":
    main()
