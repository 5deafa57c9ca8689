#!/usr/bin/env python3
"""A full-size `torchvision.models.resnet18()` saved every way torch.save can, for the import test.

Usage: python scripts/save_torchvision_resnet18.py DIR
Writes DIR/zip.pth (torch.save's default), zip_p4.pth (pickle protocol 4), legacy.pth and
legacy_p1.pth (the pre-1.6 stream), checkpoint.pth.tar (under `state_dict`, as the ImageNet
example writes it), and DIR/reference.safetensors: the encoder's tensors (all but `fc`), which
`barlow export --weights FILE --arch resnet18` must give back unchanged.
"""
import os
import sys

import torch
import torchvision
from safetensors.torch import save_file


def main():
    out = sys.argv[1]
    torch.manual_seed(0)
    state = torchvision.models.resnet18().state_dict()
    torch.save(state, os.path.join(out, "zip.pth"))
    torch.save(state, os.path.join(out, "zip_p4.pth"), pickle_protocol=4)
    torch.save(state, os.path.join(out, "legacy.pth"), _use_new_zipfile_serialization=False)
    torch.save(state, os.path.join(out, "legacy_p1.pth"), _use_new_zipfile_serialization=False, pickle_protocol=1)
    torch.save({"epoch": 90, "arch": "resnet18", "state_dict": state}, os.path.join(out, "checkpoint.pth.tar"))
    save_file({k: v for k, v in state.items() if not k.startswith("fc.")}, os.path.join(out, "reference.safetensors"))


if __name__ == "__main__":
    main()
