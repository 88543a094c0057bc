#!/usr/bin/env python3
"""Exports the broad CPU benchmark's float models (random weights, fixed seed, no downloads) with a
symbolic batch dimension, and writes OUT/manifest.json describing their inputs. Run with a Python
that has torch and torchvision (here /tmp/benchvenv/bin/python); bench/cpu_models/run.py times them.

  python bench/cpu_models/export.py --out /tmp/cpu_models [--models squeezenet bilstm ...]

Models: SqueezeNet 1.1, MobileNetV3-Large, DenseNet-121 (torchvision), a 2-layer bidirectional
LSTM (80 features, 256 hidden, 200 frames), and a 1-D conv audio front end (a 512-sample kernel
at stride 160 over 1 s of 16 kHz audio, then two small convs), exported with the TorchScript
exporter at opset 17.
"""
import argparse
import json
import os
import sys
import warnings

import torch


class BiLSTM(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = torch.nn.LSTM(80, 256, num_layers=2, bidirectional=True, batch_first=True)
        self.head = torch.nn.Linear(512, 32)

    def forward(self, x):
        y, _ = self.lstm(x)
        return self.head(y)


class AudioFrontEnd(torch.nn.Module):
    """A learned filterbank over raw audio (as wav2vec-style front ends do), then two convs."""
    def __init__(self):
        super().__init__()
        self.fb = torch.nn.Conv1d(1, 256, kernel_size=512, stride=160, padding=256)
        self.c1 = torch.nn.Conv1d(256, 256, kernel_size=3, padding=1)
        self.c2 = torch.nn.Conv1d(256, 128, kernel_size=3, padding=1, groups=2)

    def forward(self, wav):
        x = torch.relu(self.fb(wav))
        x = torch.relu(self.c1(x))
        return self.c2(x)


def vision(name):
    import torchvision
    return {"squeezenet": lambda: torchvision.models.squeezenet1_1(weights=None),
            "mobilenetv3": lambda: torchvision.models.mobilenet_v3_large(weights=None),
            "densenet121": lambda: torchvision.models.densenet121(weights=None)}[name]()


# name -> (builder, input name, per-sample shape)
MODELS = {
    "squeezenet": (lambda: vision("squeezenet"), "image", (3, 224, 224)),
    "mobilenetv3": (lambda: vision("mobilenetv3"), "image", (3, 224, 224)),
    "densenet121": (lambda: vision("densenet121"), "image", (3, 224, 224)),
    "bilstm": (BiLSTM, "features", (200, 80)),
    "audio_frontend": (AudioFrontEnd, "wav", (1, 16000)),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--models", nargs="*", default=list(MODELS))
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    man_path = os.path.join(a.out, "manifest.json")
    man = json.load(open(man_path)) if os.path.exists(man_path) else {"models": {}}
    for name in a.models:
        build, in_name, shape = MODELS[name]
        path = os.path.join(a.out, name + ".onnx")
        try:
            torch.manual_seed(0)
            m = build().eval()
            x = torch.randn(1, *shape)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(m, (x,), path, dynamo=False, opset_version=17, input_names=[in_name],
                                  output_names=["out"], dynamic_axes={in_name: {0: "batch"}, "out": {0: "batch"}})
        except Exception as e:  # noqa: BLE001 - e.g. torchvision missing: the row is left out, said why
            print("%s: not exported (%s)" % (name, str(e).splitlines()[0] if str(e) else type(e).__name__))
            continue
        man["models"][name] = {"file": name + ".onnx", "input": in_name, "shape": list(shape), "dtype": "float32"}
        print("%s: %s (%.1f MB)" % (name, path, os.path.getsize(path) / 1e6))
    man["torch"] = torch.__version__
    with open(man_path, "w") as f:
        json.dump(man, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
