#!/usr/bin/env python3
"""Builds the int8 benchmark's float models (run with the torch environment, e.g.
/tmp/benchvenv/bin/python): a small BERT (random weights, fixed seed, no downloads) exported with
the TorchScript exporter at opset 17. bench/int8_bench.py calls this, then quantises the models
with onnxruntime.quantization in its own environment.

  python bench/int8_models.py OUT_DIR
"""
import os
import sys
import warnings

import torch


def bert_small(path, layers=4, hidden=256, heads=4, inter=1024, seq=128):
    import transformers as tf
    torch.manual_seed(0)
    cfg = tf.BertConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=inter, vocab_size=8000, attn_implementation="eager")
    m = tf.BertModel(cfg).eval()

    class Wrap(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask):
            return self.m(input_ids=input_ids, attention_mask=attention_mask, return_dict=True).last_hidden_state

    ids = torch.randint(0, 8000, (1, seq))
    mask = torch.ones(1, seq, dtype=torch.int64)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Wrap(m), (ids, mask), path, opset_version=17, do_constant_folding=True, dynamo=False,
                          input_names=["input_ids", "attention_mask"], output_names=["last_hidden_state"],
                          dynamic_axes={"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}})


if __name__ == "__main__":
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    p = os.path.join(out, "bert_small.onnx")
    if not os.path.exists(p):
        bert_small(p)
    print(p)
