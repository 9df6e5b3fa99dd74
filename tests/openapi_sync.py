#!/usr/bin/env python3
"""openapi_sync_test: docs/openapi.json is docs/openapi.yaml as JSON.

The C++ tests read the JSON twin (RapidJSON, no YAML parser in C++).
After editing the YAML, refresh the twin with:
    python3 tests/openapi_sync.py --write
"""
import json
import pathlib
import sys

try:
    import yaml
except ImportError:  # python3-yaml is in scripts/deps
    print("openapi_sync: python3-yaml is not installed", file=sys.stderr)
    sys.exit(1)

docs = pathlib.Path(__file__).resolve().parent.parent / "docs"
source = yaml.safe_load((docs / "openapi.yaml").read_text(encoding="utf-8"))
text = json.dumps(source, indent=1, ensure_ascii=False) + "\n"
twin = docs / "openapi.json"
if "--write" in sys.argv[1:]:
    twin.write_text(text, encoding="utf-8")
    sys.exit(0)
if not twin.exists() or json.loads(twin.read_text(encoding="utf-8")) != source:
    print("docs/openapi.json is out of date with docs/openapi.yaml; run "
          "python3 tests/openapi_sync.py --write", file=sys.stderr)
    sys.exit(1)
print("openapi_sync: docs/openapi.json matches docs/openapi.yaml")
