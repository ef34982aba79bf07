"""`graft models [PATTERN] [--pretrained]`: the architecture names the `timm` family takes, as timm lists them.

With `--pretrained` the names carry their weight tags (`resnet50.a1_in1k`), the values
`model.pretrained` takes, and say whether the weights are in the local Hugging Face
cache already (what an offline machine can use).
"""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    models = sub.add_parser("models", help="list timm architectures (model.family: timm) or their pretrained weights")
    models.add_argument("pattern", nargs="?", default="", help="shell-style filter, e.g. 'convnext*' (default: all)")
    models.add_argument("--pretrained", action="store_true", help="list pretrained weights (name.tag), cache status")
    models.add_argument("--json", action="store_true", help="machine-readable output")
    models.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    import timm

    pattern = args.pattern or "*"
    names = timm.list_models(pattern, pretrained=args.pretrained)
    if args.pretrained:
        from graftflow.core.pretrained_weights import hub_cached

        rows = [{"name": n, "cached": hub_cached(n)} for n in names]
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            for row in rows:
                print(f"{row['name']}\t{'cached' if row['cached'] else '-'}")
    elif args.json:
        print(json.dumps(names, indent=2))
    else:
        print("\n".join(names))
    if not names and not args.json:
        import sys

        print(f"no timm {'weights' if args.pretrained else 'architecture'} matches '{pattern}'", file=sys.stderr)
    return 0
