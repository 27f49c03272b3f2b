"""``edgesentry convert mdmf`` and ``edgesentry detect mdmf`` (the same as ``edgesentry classify``)."""

from __future__ import annotations

import argparse

from edgesentry.bundle import Bundle
from edgesentry.cli import classify
from edgesentry.detectors.mdmf import DEFAULT_TEMPLATE, convert

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
    parser.add_argument("clip", help="query video (PATH or PATH@START:END)")


def detect_from_args(args: argparse.Namespace) -> int:
    return classify.run(args)
