"""``edgesentry classify BUNDLE GALLERY CLIP``: few-shot action class of a query clip (mdmf)."""

from __future__ import annotations

import argparse
import json

HELP = "classify a query clip against the classes enrolled in a gallery (mdmf)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from edgesentry.cli._args import add_backend_args, add_kernel_args
    from edgesentry.cli.families.mdmf import add_prompt_arguments

    parser.add_argument("bundle", help="mdmf bundle directory")
    parser.add_argument("gallery", help="gallery .npz made by `edgesentry enroll`")
    parser.add_argument("clip", help="query clip: PATH or PATH@START:END (fractions of the clip), or frame features "
                                     "[T, D] in a .npy file")
    add_prompt_arguments(parser)
    parser.add_argument("--json", default=None, help="also write the result summary as JSON to this file")
    add_backend_args(parser)
    add_kernel_args(parser)


def run(args: argparse.Namespace) -> int:
    import edgesentry
    from edgesentry.cli._args import family_of_bundle

    family_of_bundle(args.bundle, "mdmf", command="classify")
    det = edgesentry.load(args.bundle, backend=args.backend, kernels=args.kernels)
    gallery = det.load_gallery(args.gallery)
    result = det.classify(args.clip, gallery, prompt=args.prompt_mode, seed=args.seed)
    logits = result.extras["class_logits"]
    ranked = sorted(logits.items(), key=lambda kv: -kv[1])
    print(f"{args.clip}: {result.info['label']}  (prompt: {result.info['prompt_label']}, "
          f"kernel {result.info['kernel_tier']}, backend {result.info['backend']}, "
          f"{result.timings['total'] * 1e3:.1f} ms)")
    for label, value in ranked:
        print(f"  {value:10.4f}  {label}")
    if args.json:
        summary = {"clip": args.clip, "label": result.info["label"], "logits": logits,
                   "prompt_label": result.info["prompt_label"], "timings": result.timings,
                   "kernel_tier": result.info["kernel_tier"], "backend": result.info["backend"]}
        with open(args.json, "w") as fh:
            json.dump(summary, fh, indent=2)
    return 0
