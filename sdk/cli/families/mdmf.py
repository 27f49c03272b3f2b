"""``edgesentry convert mdmf`` and ``edgesentry detect mdmf``: classify query clips or frame features (files,
folders, globs) against a gallery; ``edgesentry classify`` is the one-query twin."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from edgesentry.api import load
from edgesentry.bundle import Bundle
from edgesentry.cli._args import add_backend_args, add_kernel_args, family_of_bundle
from edgesentry.cli._detect import Item, exit_code, run_detector, write_records
from edgesentry.detectors.mdmf import DEFAULT_TEMPLATE, MDMFDetector, convert
from edgesentry.io.files import expand, names_for
from edgesentry.io.video import Clip
from edgesentry.result import Result

#: what a folder of MDMF inputs contributes: videos and frame-feature arrays
MDMF_SUFFIXES = MDMFDetector.input_suffixes

CONVERT_HELP = (
    "Convert a CLIP-MDMF checkpoint (fully_trained.pt, checkpoint.pt with model_state_dict, or a heads-only "
    "state dict / the oracle's int8 heads .npz) into a bundle. --clip RN50.pt adds the CLIP text tower "
    "(and the visual tower when the checkpoint has no backbone.* keys). Without any backbone the bundle is "
    "features-in: classify_features() and galleries of frame features only."
)


def add_convert_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="MDMF checkpoint (.pt/.pth state dict or checkpoint; int8 heads .npz)")
    parser.add_argument("--clip", default=None, help="OpenAI CLIP RN50.pt (text tower; visual tower if the "
                                                     "checkpoint has no backbone)")
    parser.add_argument("--clip-vocab", default=None, help="CLIP BPE vocabulary bpe_simple_vocab_16e6.txt.gz "
                                                           "(needed to encode class names)")
    parser.add_argument("--prompt-template", default=DEFAULT_TEMPLATE, help="class prompt (default: %(default)r)")


def convert_from_args(args: argparse.Namespace) -> Bundle:
    return convert(args.checkpoint, args.clip, output=args.output, clip_vocab=args.clip_vocab,
                   prompt_template=args.prompt_template, overwrite=args.force)


def add_detect_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", help="mdmf bundle directory")
    parser.add_argument("gallery", help="gallery .npz made by `edgesentry enroll`")
    parser.add_argument("queries", nargs="+",
                        help="query clips (PATH or PATH@START:END), frame-feature .npy files ([T, D]), folders and/or "
                             "quoted globs")
    parser.add_argument("--out", default=None, help="directory for the records (results.jsonl, summary.json)")
    add_prompt_arguments(parser)
    add_backend_args(parser)
    add_kernel_args(parser)


def add_prompt_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prompt-mode", default="argmax", choices=["argmax", "sample"],
                        help="prompt selector: argmax (deterministic, default) or the seed's draw (needs --seed)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the prompt draw for --prompt-mode sample")


def clip_arguments(given: list[str], what: str = "clip") -> list[str]:
    """Clips and feature files as the verbs take them: ``PATH@START:END`` spans pass as they are,
    folders and globs expand to their videos and ``.npy`` files."""
    out: list[str] = []
    for text in given:
        if "@" in text and Path(Clip.parse(text).path).is_file():
            out.append(text)
        else:
            out.extend(str(p) for p in expand(text, MDMF_SUFFIXES, what=what))
    return out


def detect_from_args(args: argparse.Namespace) -> int:
    family_of_bundle(args.bundle, "mdmf", command="detect mdmf")
    det = load(args.bundle, backend=args.backend, kernels=args.kernels)
    det.default_gallery = det.load_gallery(args.gallery)
    queries = clip_arguments(args.queries, what="query")
    names = names_for([Path(Clip.parse(q).path) if "@" in q else Path(q) for q in queries])
    items = [Item(name, q, q) for name, q in zip(names, queries)]
    out = Path(args.out) if args.out else None
    run = run_detector(det, items, out, kind="query", describe=_describe,
                       options={"prompt": args.prompt_mode, "seed": args.seed},
                       write=lambda item, res: {"class": res.info["label"], "class_logits": res.extras["class_logits"]})
    write_records(run, out, {"bundle": args.bundle, "gallery": args.gallery, "classes": det.default_gallery.labels,
                             "backend": det.backend})
    return exit_code(run)


def _describe(res: Result, record: dict[str, Any]) -> str:
    probs = np.asarray(res.extras["probs"])[0]
    return f"{res.info['label']} (p {probs.max():.2f}, top logit {res.score:.4g})"
