#!/usr/bin/env python3
"""Render the chart with real Helm v4 (helm-python-sdk) and print the objects as JSON.

    python3 tests/chart/render.py [--values JSON] [--release NAME] [--namespace NS]

Prints a JSON list of every rendered object (NOTES.txt left out), in file order. The
end-to-end tests use it to apply the chart's own webhook configurations to a real API
server.

The chart refuses to render without `image.repository` (no image is published); when
--values sets none, TEST_IMAGE below is used (the e2e tests run the binary outside the
cluster, so the Deployment's image is never pulled). `--image ''` turns that off.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

try:
    import yaml
    from helm_python.chart import Chart
except ImportError as exc:  # pragma: no cover - environment problem
    print(
        f"render: missing dependency ({exc}).\n"
        "Install with: python3 -m pip install -r tests/chart/requirements.txt",
        file=sys.stderr,
    )
    sys.exit(2)

CHART_DIR = Path(__file__).resolve().parent.parent.parent / "charts" / "pullsecret-injector"
TEST_IMAGE = "localhost:5000/pullsecret-injector"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--values", default="{}", help="values as a JSON object")
    ap.add_argument("--release", default="psi")
    ap.add_argument("--namespace", default="pullsecret-injector")
    ap.add_argument("--image", default=TEST_IMAGE,
                    help="image.repository when --values sets none (default: %(default)s)")
    args = ap.parse_args()
    try:
        values = json.loads(args.values)
    except json.JSONDecodeError as exc:
        print(f"render: --values is not JSON: {exc}", file=sys.stderr)
        return 2
    image = values.get("image")
    if args.image and not (isinstance(image, dict) and image.get("repository")):
        values["image"] = {**(image if isinstance(image, dict) else {}), "repository": args.image}
    files = Chart.load(str(CHART_DIR)).render(
        values, name=args.release, namespace=args.namespace, is_install=True
    )
    docs = []
    for path, text in sorted(files.items()):
        if path.endswith("NOTES.txt"):
            continue
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    json.dump(docs, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
