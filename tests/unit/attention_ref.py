"""Float64 numpy reference for the attention operators, written from
/work/shared/spec/attention-ops.md (com.microsoft ops, ORT 1.16 semantics with the spec's normative
choices for quirks Q2, Q3, Q5, Q6) and from the ONNX operator documentation (Attention opset 23/24,
RotaryEmbedding opset 23).

Deliberately literal: masks are materialised as the additive (B, S, T) buffer the spec describes
(masked -> + mask_filter_value, causal -> -inf), scores are a full (B, N, S, T) array and softmax is
the textbook max-subtracted one. Nothing here shares code or structure with the C kernels."""
import numpy as np

NEG_INF = -np.inf


def _f64(x):
    return None if x is None else np.asarray(x, dtype=np.float64)


def split_heads(x, n):
    """(B, S, N*H) -> (B, N, S, H)."""
    b, s, d = x.shape
    return x.reshape(b, s, n, d // n).transpose(0, 2, 1, 3)


def merge_heads(x):
    """(B, N, S, H) -> (B, S, N*H)."""
    b, n, s, h = x.shape
    return x.transpose(0, 2, 1, 3).reshape(b, s, n * h)


def softmax(x):
    m = np.max(x, axis=-1, keepdims=True)
    e = np.exp(x - m)
    return e / np.sum(e, axis=-1, keepdims=True)


def sdpa(q, k, v, scale, bias=None, causal=False, past=0):
    """Spec §9. q (B,N,S,H), k (B,N,T,H), v (B,N,T,Hv); bias broadcastable to (B,N,S,T) and already
    holding every additive term (rpb, mask). causal: key j visible to query s iff j <= past + s."""
    x = scale * np.einsum("bnsh,bnth->bnst", q, k)
    if bias is not None:
        x = x + bias
    if causal:
        s_len, t_len = x.shape[-2:]
        j = np.arange(t_len)[None, :]
        s = np.arange(s_len)[:, None]
        x = np.where(j > past + s, NEG_INF, x)
    p = softmax(x)
    return np.einsum("bnst,bnth->bnsh", p, v)


# ---------------------------------------------------------------- com.microsoft masks (spec §7)

def contrib_mask_bias(mask, B, S, T, filter_value, kind="attention", L=None):
    """Additive (B, 1, S, T) term for a mask_index / key_padding_mask, as the reference CPU kernel
    builds it. kind: 'attention' or 'mha'. The (3B+2) form is expanded to a key-length mask (Q5)."""
    if mask is None:
        return None
    mask = np.asarray(mask)
    add = np.zeros((B, S, T))
    if mask.ndim == 1:
        n = mask.shape[0]
        if n == B or n == 3 * B + 2:
            for b in range(B):
                add[b, :, max(int(mask[b]), 0):] = filter_value
        elif n == 2 * B and kind == "attention":
            for b in range(B):
                end, start = int(mask[b]), int(mask[B + b])
                add[b, :, max(end, 0):] = filter_value
                add[b, :, :min(max(start, 0), T)] = filter_value
        else:
            raise ValueError("bad 1-D mask")
    elif mask.ndim == 2:
        if kind == "attention" and mask.shape[1] == 1:
            return None  # dummy
        W = mask.shape[1]
        full = np.ones((B, T), dtype=mask.dtype)
        full[:, T - W:] = mask  # a (B, L) MHA mask with past: it covers the new keys
        add += np.where(full == 0, filter_value, 0.0)[:, None, :]
    elif mask.ndim == 3:
        add += np.where(mask == 0, filter_value, 0.0)
    elif mask.ndim == 4:
        rows = mask[:, 0, T - S:T, :T]
        add += np.where(rows == 0, filter_value, 0.0)
    return add[:, None, :, :]


def _rpb(rpb):
    return None if rpb is None else _f64(rpb)  # (B or 1, N, S, T): numpy broadcasts dim 0


def _add(*terms):
    out = None
    for t in terms:
        if t is not None:
            out = t if out is None else out + t
    return out


# ---------------------------------------------------------------- com.microsoft Attention (§2)

def contrib_attention(inp, weights, bias, num_heads, mask=None, past=None, rpb=None,
                      unidirectional=0, qkv_hidden_sizes=None, scale=0.0, mask_filter_value=-10000.0,
                      share_buffer=False, past_sequence_length=None):
    """Returns (output, present)."""
    x, w = _f64(inp), _f64(weights)
    B, S, _ = x.shape
    W = w.shape[1]
    if qkv_hidden_sizes:
        D, _, Dv = qkv_hidden_sizes
    else:
        D = Dv = W // 3
    b = np.zeros(W) if bias is None else _f64(bias)
    qkv = x @ w + b
    N = num_heads
    H = D // N
    q = split_heads(qkv[..., :D], N)
    k = split_heads(qkv[..., D:2 * D], N)
    v = split_heads(qkv[..., 2 * D:], N)
    present = None
    P = 0
    if past is not None:
        past = _f64(past)
        if share_buffer:
            P = int(np.asarray(past_sequence_length).reshape(-1)[0])
            present = past.copy()
            present[0, :, :, P:P + S] = k
            present[1, :, :, P:P + S] = v
            k = present[0, :, :, :P + S]
            v = present[1, :, :, :P + S]
        else:
            P = past.shape[3]
            k = np.concatenate([past[0], k], axis=2)
            v = np.concatenate([past[1], v], axis=2)
            present = np.stack([k, v])
    else:
        present = np.stack([k, v]) if D == Dv else None
    T = P + S
    sc = scale if scale else 1.0 / np.sqrt(H)
    bias_t = _add(_rpb(rpb), contrib_mask_bias(mask, B, S, T, mask_filter_value, "attention"))
    o = sdpa(q, k, v, sc, bias_t, causal=bool(unidirectional), past=P)
    return merge_heads(o), present


# ---------------------------------------------------------------- com.microsoft MultiHeadAttention (§3)

def mha(query, key=None, value=None, bias=None, num_heads=1, key_padding_mask=None, rpb=None,
        past_key=None, past_value=None, scale=0.0, mask_filter_value=-10000.0, unidirectional=0):
    """Returns (output, present_key, present_value). Formats by rank as in spec §3.4."""
    N = num_heads
    qa = _f64(query)
    bias = None if bias is None else _f64(bias)
    if qa.ndim == 5:  # packed QKV (B, S, N, 3, H)
        B, S, _, _, H = qa.shape
        D = Dv = N * H
        q, k, v = (qa[:, :, :, i, :].reshape(B, S, D) for i in range(3))
        cached = False
    else:
        B, S, D = qa.shape
        H = D // N
        ka = _f64(key)
        q = qa
        cached = False
        if ka.ndim == 5:  # packed KV (B, L, N, 2, H)
            L = ka.shape[1]
            k = ka[:, :, :, 0, :].reshape(B, L, D)
            v = ka[:, :, :, 1, :].reshape(B, L, D)
            Dv = D
        elif ka.ndim == 4:  # cached (B, N, L, H)
            cached = True
            k, v = ka, _f64(value)
            Dv = N * v.shape[3]
        else:
            k, v = ka, _f64(value)
            Dv = v.shape[2]
    if bias is not None:
        q = q + bias[:D]
        if not cached:
            k = k + bias[D:2 * D]
            v = v + bias[2 * D:]
    qh = split_heads(q, N)
    if cached:
        kh, vh = k, v
    else:
        kh, vh = split_heads(k, N), split_heads(v, N)
    L = kh.shape[2]
    P = 0
    if past_key is not None:
        P = past_key.shape[2]
        kh = np.concatenate([_f64(past_key), kh], axis=2)
        vh = np.concatenate([_f64(past_value), vh], axis=2)
    T = P + L
    sc = scale if scale else 1.0 / np.sqrt(H)
    bias_t = _add(_rpb(rpb), contrib_mask_bias(key_padding_mask, B, S, T, mask_filter_value, "mha", L))
    o = sdpa(qh, kh, vh, sc, bias_t, causal=bool(unidirectional), past=P)
    return merge_heads(o), kh, vh


# ---------------------------------------------------------------- packed ops (§4, §5)

def pack(padded, lengths):
    """padded (B, S, ...) -> (packed rows, token_offset (B,S) int32, cu_seqlens (B+1) int32)."""
    B, S = padded.shape[:2]
    real, pad = [], []
    for b in range(B):
        for s in range(S):
            (real if s < lengths[b] else pad).append(b * S + s)
    flat = padded.reshape((B * S,) + padded.shape[2:])
    packed = flat[real]
    offsets = np.array(real + pad, dtype=np.int32).reshape(B, S)
    cu = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return packed, offsets, cu


def _per_sequence(q, k, v, cu, S, N, scale, rpb):
    """q, k, v (tokens, N, H*); attention inside each sequence; rpb in padded coordinates."""
    out = np.zeros((q.shape[0], N, v.shape[2]))
    for b in range(len(cu) - 1):
        lo, hi = int(cu[b]), int(cu[b + 1])
        n = hi - lo
        if n == 0:
            continue
        qb = q[lo:hi].transpose(1, 0, 2)[None]
        kb = k[lo:hi].transpose(1, 0, 2)[None]
        vb = v[lo:hi].transpose(1, 0, 2)[None]
        bias = None
        if rpb is not None:
            r = _f64(rpb)
            bias = r[0 if r.shape[0] == 1 else b][None, :, :n, :n]
        out[lo:hi] = sdpa(qb, kb, vb, scale, bias)[0].transpose(1, 0, 2)
    return out.reshape(q.shape[0], -1)


def packed_attention(inp, weights, bias, token_offset, cu, num_heads, rpb=None,
                     qkv_hidden_sizes=None, scale=0.0):
    x, w, b = _f64(inp), _f64(weights), _f64(bias)
    W = w.shape[1]
    D, _, Dv = qkv_hidden_sizes if qkv_hidden_sizes else (W // 3, W // 3, W // 3)
    qkv = x @ w + b
    N = num_heads
    tokens = x.shape[0]
    q = qkv[:, :D].reshape(tokens, N, D // N)
    k = qkv[:, D:2 * D].reshape(tokens, N, D // N)
    v = qkv[:, 2 * D:].reshape(tokens, N, Dv // N)
    sc = scale if scale else 1.0 / np.sqrt(D // N)
    return _per_sequence(q, k, v, cu, token_offset.shape[1], N, sc, rpb)


def packed_mha(query, key, value, bias, token_offset, cu, num_heads, rpb=None, scale=0.0):
    N = num_heads
    qa = _f64(query)
    tokens = qa.shape[0]
    if qa.ndim == 4:
        H = qa.shape[3]
        q, k, v = (qa[:, :, i, :].reshape(tokens, N * H) for i in range(3))
    else:
        q, k, v = qa, _f64(key), _f64(value)
    D, Dv = q.shape[1], v.shape[1]
    if bias is not None:
        bb = _f64(bias)
        q, k, v = q + bb[:D], k + bb[D:2 * D], v + bb[2 * D:]
    H = D // N
    sc = scale if scale else 1.0 / np.sqrt(H)
    return _per_sequence(q.reshape(tokens, N, H), k.reshape(tokens, N, H),
                         v.reshape(tokens, N, Dv // N), cu, token_offset.shape[1], N, sc, rpb)


# ---------------------------------------------------------------- ONNX Attention (opset 23/24)

def onnx_attention(Q, K, V, attn_mask=None, past_key=None, past_value=None, nonpad_kv_seqlen=None,
                   scale=None, is_causal=0, q_num_heads=None, kv_num_heads=None, softcap=0.0,
                   qk_matmul_output_mode=0):
    """Returns (Y, present_key, present_value, qk_matmul_output) in float64."""
    q, k, v = _f64(Q), _f64(K), _f64(V)
    three_d = q.ndim == 3
    if three_d:
        q, k, v = split_heads(q, q_num_heads), split_heads(k, kv_num_heads), split_heads(v, kv_num_heads)
    B, Nq, S, H = q.shape
    Nkv = k.shape[1]
    P = 0
    if past_key is not None:
        P = past_key.shape[2]
        k = np.concatenate([_f64(past_key), k], axis=2)
        v = np.concatenate([_f64(past_value), v], axis=2)
    present_k, present_v = k, v
    T = k.shape[2]
    sc = (1.0 / np.sqrt(H)) if scale is None else scale
    rep = Nq // Nkv
    kk, vv = np.repeat(k, rep, axis=1), np.repeat(v, rep, axis=1)
    raw = sc * np.einsum("bnsh,bnth->bnst", q, kk)
    capped = softcap * np.tanh(raw / softcap) if softcap and softcap > 0 else raw
    add = np.zeros((1, 1, S, T))
    if attn_mask is not None:
        m = np.asarray(attn_mask)
        if m.dtype == np.bool_:
            m = np.where(m, 0.0, NEG_INF)
        m = _f64(m)
        pad = T - m.shape[-1]
        if pad > 0:  # a shorter last dimension counts as masked (-inf)
            m = np.concatenate([m, np.full(m.shape[:-1] + (pad,), NEG_INF)], axis=-1)
        add = add + m.reshape((1,) * (4 - m.ndim) + m.shape)
    if is_causal:
        j = np.arange(T)[None, :]
        s = np.arange(S)[:, None]
        add = add + np.where(j > P + s, NEG_INF, 0.0)
    if nonpad_kv_seqlen is not None:
        keep = np.arange(T)[None, :] < np.asarray(nonpad_kv_seqlen)[:, None]
        add = add + np.where(keep, 0.0, NEG_INF)[:, None, None, :]
    x = capped + add
    with np.errstate(invalid="ignore"):
        p = softmax(x)
    # a row with no finite score: 0/0 in the textbook softmax; kiln and onnxruntime give zeros
    p = np.where(np.isnan(p) & np.isneginf(x).all(axis=-1, keepdims=True), 0.0, p)
    y = np.einsum("bnst,bnth->bnsh", p, vv)
    qk = {0: raw, 1: capped, 2: x, 3: p}[qk_matmul_output_mode]
    if three_d:
        y = merge_heads(y)
    return y, present_k, present_v, qk


# ---------------------------------------------------------------- RotaryEmbedding

def _rotate(x, cos, sin, rd, interleaved):
    """x (..., H) with cos/sin broadcastable to (..., rd/2)."""
    out = x.copy()
    r = x[..., :rd]
    if interleaved:
        x1, x2 = r[..., 0::2], r[..., 1::2]
        out[..., 0:rd:2] = cos * x1 - sin * x2
        out[..., 1:rd:2] = sin * x1 + cos * x2
    else:
        h = rd // 2
        x1, x2 = r[..., :h], r[..., h:]
        out[..., :h] = cos * x1 - sin * x2
        out[..., h:rd] = sin * x1 + cos * x2
    return out


def onnx_rotary(X, cos_cache, sin_cache, position_ids=None, interleaved=0, rotary_embedding_dim=0,
                num_heads=0):
    x = _f64(X)
    shape = x.shape
    if x.ndim == 3:
        B, S, D = x.shape
        x = x.reshape(B, S, num_heads, D // num_heads)  # (B, S, N, H)
    else:
        x = x.transpose(0, 2, 1, 3)
    H = x.shape[3]
    rd = rotary_embedding_dim or H
    c, s = _f64(cos_cache), _f64(sin_cache)
    if position_ids is not None:
        c, s = c[position_ids], s[position_ids]  # (B, S, rd/2)
    y = _rotate(x, c[:, :, None, :], s[:, :, None, :], rd, interleaved)
    if len(shape) == 3:
        return y.reshape(shape)
    return y.transpose(0, 2, 1, 3)


def ms_rotary(X, position_ids, cos_cache, sin_cache, interleaved=0, rotary_embedding_dim=0,
              num_heads=0):
    """com.microsoft RotaryEmbedding: X (B, S, D) or (B, N, S, H); position_ids (1) = offset or (B, S)."""
    x = _f64(X)
    c, s = _f64(cos_cache), _f64(sin_cache)
    half = c.shape[1]
    pos = np.asarray(position_ids)
    if x.ndim == 3:
        B, S, D = x.shape
        H = D // num_heads if num_heads else 2 * half
        x4 = x.reshape(B, S, D // H, H)
    else:
        B, S = x.shape[0], x.shape[2]
        x4 = x.transpose(0, 2, 1, 3)
        H = x4.shape[3]
    if pos.size == 1:
        pos = np.broadcast_to(int(pos.reshape(-1)[0]) + np.arange(S), (B, S))
    rd = rotary_embedding_dim or H
    y = _rotate(x4, c[pos][:, :, None, :], s[pos][:, :, None, :], rd, interleaved)
    if x.ndim == 3:
        return y.reshape(x.shape)
    return y.transpose(0, 2, 1, 3)
