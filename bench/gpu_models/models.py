"""The benchmark's models, shared by export.py (which writes them to ONNX) and run.py (which times
the same PyTorch modules): random weights from a fixed seed, no downloads.

Each graph is a thin nn.Module over a transformers / torchvision model whose forward takes and
returns plain tensors in the ONNX graph's input and output order, so that an ONNX run and a PyTorch
run can be compared output by output. build_graphs(name, tiny, attn) rebuilds the same weights every
time (same seed, same construction order); weight_checksum() lets run.py confirm that.

  bert          BertModel(BertConfig())          (input_ids, attention_mask) -> (last_hidden_state, pooler_output)
  gpt2_prefill  GPT2LMHeadModel(GPT2Config())    (input_ids) -> (logits of the last position, present.{i}.key/value...)
  gpt2_decode   the same weights                 (input_ids [B,1], past.{i}.key/value...) -> (logits, present...)
  vit           ViTModel(ViTConfig())            (pixel_values [B,3,224,224]) -> (last_hidden_state, pooler_output)
  resnet50      torchvision resnet50(weights=None) (pixel_values) -> logits
"""
import hashlib

import torch

SEED = 20261205
MODELS = ["bert", "gpt2", "vit", "resnet50"]


def _configs(name, tiny, attn):
    """The transformers config: the library's defaults (BERT-base, GPT-2 small, ViT-B/16), or with
    tiny a toy of the same architecture (2 layers, width 32, 32x32 images)."""
    import transformers as tf
    small = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    if name == "bert":
        return tf.BertConfig(attn_implementation=attn, **(small if tiny else {}))
    if name == "gpt2":
        toy = dict(n_embd=32, n_layer=2, n_head=2, vocab_size=1000, bos_token_id=0, eos_token_id=0)
        return tf.GPT2Config(attn_implementation=attn, use_cache=True, **(toy if tiny else {}))
    if name == "vit":
        return tf.ViTConfig(attn_implementation=attn, **(dict(small, image_size=32, patch_size=8) if tiny else {}))
    raise KeyError(name)


class Bert(torch.nn.Module):
    inputs, outputs = ["input_ids", "attention_mask"], ["last_hidden_state", "pooler_output"]

    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, input_ids, attention_mask):
        o = self.m(input_ids=input_ids, attention_mask=attention_mask, return_dict=True)
        return o.last_hidden_state, o.pooler_output


class Vit(torch.nn.Module):
    inputs, outputs = ["pixel_values"], ["last_hidden_state", "pooler_output"]

    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, pixel_values):
        o = self.m(pixel_values=pixel_values, return_dict=True)
        return o.last_hidden_state, o.pooler_output


class ResNet(torch.nn.Module):
    inputs, outputs = ["pixel_values"], ["logits"]

    def __init__(self, m, image):
        super().__init__()
        self.m, self.image = m, image

    def forward(self, pixel_values):
        return self.m(pixel_values)


def kv_names(n_layer, prefix):
    return [f"{prefix}.{i}.{kv}" for i in range(n_layer) for kv in ("key", "value")]


def _cache_tensors(cache):
    """Flat [k0, v0, k1, v1, ...] of a transformers Cache (the 5.x layers API, or 4.x lists/tuples)."""
    if hasattr(cache, "layers"):
        return [t for layer in cache.layers for t in (layer.keys, layer.values)]
    if hasattr(cache, "key_cache"):
        return [t for kv in zip(cache.key_cache, cache.value_cache) for t in kv]
    return [t for kv in cache for t in kv]




class Gpt2Prefill(torch.nn.Module):
    """Prompt processing: logits of the last position only (what generation needs; the logits of
    every position would be B*S*50257 values) and every layer's K/V for the decode graph."""

    def __init__(self, m):
        super().__init__()
        self.m = m
        self.inputs = ["input_ids"]
        self.outputs = ["logits"] + kv_names(m.config.n_layer, "present")

    def forward(self, input_ids):
        o = self.m(input_ids=input_ids, use_cache=True, logits_to_keep=1, return_dict=True)
        return (o.logits, *_cache_tensors(o.past_key_values))


class Gpt2Decode(torch.nn.Module):
    """One decode step: new tokens [B, 1] after a K/V cache of P positions; returns the logits and
    the K/V grown to P + 1 (feed them back as the next step's past)."""

    def __init__(self, m):
        from transformers import DynamicCache  # here, not in forward: torch.compile breaks on the import
        super().__init__()
        self.m, self.cache_cls = m, DynamicCache
        self.inputs = ["input_ids"] + kv_names(m.config.n_layer, "past")
        self.outputs = ["logits"] + kv_names(m.config.n_layer, "present")

    def forward(self, input_ids, *past):
        cache = self.cache_cls([(past[i], past[i + 1]) for i in range(0, len(past), 2)])
        o = self.m(input_ids=input_ids, past_key_values=cache, use_cache=True, return_dict=True)
        return (o.logits, *_cache_tensors(o.past_key_values))


def build_graphs(name, tiny=False, attn="eager"):
    """{graph name: wrapper module} for one model, in eval mode (the wrapper too: export restores
    the wrapper's mode recursively), float32, on the CPU. attn picks the
    transformers attention ("eager" exports as plain MatMul/Softmax; "sdpa" is PyTorch's fast path);
    it changes no weight. ResNet needs torchvision: ImportError when it is missing."""
    torch.manual_seed(SEED)
    if name == "resnet50":
        import torchvision
        m = torchvision.models.resnet50(weights=None) if not tiny else \
            torchvision.models.ResNet(torchvision.models.resnet.Bottleneck, [1, 1, 1, 1], num_classes=10)
        return {"resnet50": ResNet(m, 32 if tiny else 224).eval()}
    import transformers as tf
    cfg = _configs(name, tiny, attn)
    if name == "bert":
        return {"bert": Bert(tf.BertModel(cfg)).eval()}
    if name == "vit":
        return {"vit": Vit(tf.ViTModel(cfg)).eval()}
    m = tf.GPT2LMHeadModel(cfg)
    return {"gpt2_prefill": Gpt2Prefill(m).eval(), "gpt2_decode": Gpt2Decode(m).eval()}


def weight_checksum(module):
    """sha1 over the float32 bytes of every parameter and buffer, in state_dict order (16 hex)."""
    h = hashlib.sha1()
    for k, v in module.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().to("cpu", torch.float32 if v.is_floating_point() else v.dtype).numpy().tobytes())
    return h.hexdigest()[:16]


def dims_of(graph, module):
    """Symbolic dims of every input (and output) of a graph: the dynamic axes that export declares."""
    if graph == "bert":
        return {"input_ids": ["batch", "seq"], "attention_mask": ["batch", "seq"],
                "last_hidden_state": ["batch", "seq", None], "pooler_output": ["batch", None]}
    if graph in ("vit", "resnet50"):
        return {n: ["batch"] + [None] * (3 if n == "pixel_values" else 2 if n == "last_hidden_state" else 1)
                for n in module.inputs + module.outputs}
    n_layer = module.m.config.n_layer
    d = {"input_ids": ["batch", "seq"], "logits": ["batch", None, None]}
    if graph == "gpt2_prefill":
        d.update({n: ["batch", None, "seq", None] for n in kv_names(n_layer, "present")})
    else:
        d.update({n: ["batch", None, "past", None] for n in kv_names(n_layer, "past")})
        d.update({n: ["batch", None, "total", None] for n in kv_names(n_layer, "present")})
    return {n: d[n] for n in module.inputs + module.outputs}


def image_size(graph, module):
    return module.m.config.image_size if graph == "vit" else module.image


def input_shapes(graph, module, batch, seq=None, past=None):
    """{input name: concrete shape} of one case (decode: seq is 1 and past the cache length)."""
    if graph in ("vit", "resnet50"):
        size = image_size(graph, module)
        return {"pixel_values": [batch, 3, size, size]}
    if graph == "bert":
        return {"input_ids": [batch, seq], "attention_mask": [batch, seq]}
    if graph == "gpt2_prefill":
        return {"input_ids": [batch, seq]}
    cfg = module.m.config
    kv = [batch, cfg.n_head, past, cfg.n_embd // cfg.n_head]
    return dict({"input_ids": [batch, 1]}, **{n: kv for n in kv_names(cfg.n_layer, "past")})


def make_inputs(graph, module, batch, seq=None, past=None, dtype=torch.float32, device="cpu", seed=0):
    """Random inputs for one case, a tuple in the graph's input order: token ids below the vocabulary,
    an all-ones attention mask, N(0,1) images, N(0, 0.5^2) past keys/values. Same seed, same values."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for name, shape in input_shapes(graph, module, batch, seq, past).items():
        if name == "input_ids":
            out.append(torch.randint(0, module.m.config.vocab_size, shape, generator=g))
        elif name == "attention_mask":
            out.append(torch.ones(shape, dtype=torch.int64))
        else:
            out.append((torch.randn(shape, generator=g) * (0.5 if name.startswith("past") else 1.0)).to(dtype))
    return tuple(t.to(device) for t in out)
