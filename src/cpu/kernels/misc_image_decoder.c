/* ImageDecoder (opset 20): encoded image bytes -> (H, W, C) uint8 in RGB, BGR or Grayscale
 * (C = 1, luma as ITU-R 601-2 with the same fixed-point rounding as Pillow, which the ONNX reference
 * uses). BMP and PNM are simple enough to decode here in plain C; JPEG, PNG, TIFF, WebP and
 * JPEG2000 go through Debian's codec libraries (misc_image_<fmt>.c), each compiled in only when
 * CMake found it (KILN_HAVE_<FMT>); without one, that format fails with a message naming the
 * library to install. Every read is bounds-checked: corrupt or truncated streams fail cleanly. */
#include "../../ops/op.h"

#include <stdlib.h>
#include <string.h>

enum { FMT_RGB, FMT_BGR, FMT_GRAY };
/* Largest image accepted (pixels): keeps every size computation far from overflow. */
#define MAX_PIXELS ((int64_t)1 << 28)

/* Shared with the library decoders (misc_image_<fmt>.c), which declare the same prototypes: each
 * fills *rgb (w*h*3, top row first, allocated with kimg_alloc_rgb and freed by the caller even on
 * failure) and the size. */
kiln_status kimg_check_size(kiln_ctx *ctx, const char *format, int64_t w, int64_t h);
kiln_status kimg_alloc_rgb(kiln_ctx *ctx, const char *format, int64_t w, int64_t h, uint8_t **rgb);
#define KIMG_DECODER(name) \
    kiln_status name(kiln_ctx *ctx, const uint8_t *p, size_t n, uint8_t **rgb, int64_t *w, int64_t *h)
KIMG_DECODER(kimg_decode_jpeg);
KIMG_DECODER(kimg_decode_png);
KIMG_DECODER(kimg_decode_tiff);
KIMG_DECODER(kimg_decode_webp);
KIMG_DECODER(kimg_decode_jpeg2000);

typedef struct img {
    int64_t w, h;
    uint8_t *rgb; /* w*h*3, row-major from the top */
} img;

static kiln_status parse_format(kiln_ctx *ctx, int *fmt) {
    const char *f = kiln_attr_string(ctx->node, "pixel_format", "RGB");
    if (!strcmp(f, "RGB")) *fmt = FMT_RGB;
    else if (!strcmp(f, "BGR")) *fmt = FMT_BGR;
    else if (!strcmp(f, "Grayscale")) *fmt = FMT_GRAY;
    else
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "pixel_format '%s' is not 'RGB', 'BGR' or 'Grayscale'", f);
    return KILN_OK;
}

/* The library decoders check a header's size here before they allocate anything, so a hostile
 * header cannot make kiln (or the library) ask for gigabytes. */
kiln_status kimg_check_size(kiln_ctx *ctx, const char *format, int64_t w, int64_t h) {
    if (w <= 0 || h <= 0 || w > MAX_PIXELS || h > MAX_PIXELS || w * h > MAX_PIXELS)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "ImageDecoder: bad %s image size %lld x %lld",
                         format, (long long)w, (long long)h);
    return KILN_OK;
}

kiln_status kimg_alloc_rgb(kiln_ctx *ctx, const char *format, int64_t w, int64_t h, uint8_t **rgb) {
    KILN_TRY(kimg_check_size(ctx, format, w, h));
    *rgb = malloc((size_t)(w * h * 3));
    if (!*rgb) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
    return KILN_OK;
}

static kiln_status alloc_img(kiln_ctx *ctx, img *im, int64_t w, int64_t h) {
    KILN_TRY(kimg_alloc_rgb(ctx, "image", w, h, &im->rgb));
    im->w = w, im->h = h;
    return KILN_OK;
}

static kiln_status corrupt(kiln_ctx *ctx, const char *format, const char *why) {
    return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "ImageDecoder: corrupt %s stream: %s", format, why);
}

/* ---- BMP ---- */

static uint32_t le32(const uint8_t *p) { return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24; }
static uint16_t le16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

/* Value of the channel selected by mask in pixel v, scaled to 0..255. */
static uint8_t from_mask(uint32_t v, uint32_t mask) {
    if (!mask) return 0;
    int shift = 0, bits = 0;
    while (!((mask >> shift) & 1)) shift++;
    while (shift + bits < 32 && ((mask >> (shift + bits)) & 1)) bits++;
    uint32_t x = (v & mask) >> shift, max = bits >= 32 ? 0xffffffffu : (1u << bits) - 1;
    return (uint8_t)((x * 255u + max / 2) / max);
}

static kiln_status decode_bmp(kiln_ctx *ctx, const uint8_t *p, size_t n, img *im) {
    if (n < 26) return corrupt(ctx, "BMP", "truncated header");
    uint32_t off = le32(p + 10), hs = le32(p + 14);
    if (hs != 12 && hs < 40) return corrupt(ctx, "BMP", "unknown header size");
    if (14 + (size_t)hs > n) return corrupt(ctx, "BMP", "truncated header");
    int64_t w, h;
    int bpp, comp = 0;
    uint32_t n_colors = 0, masks[3] = {0, 0, 0};
    const uint8_t *d = p + 14;
    if (hs == 12) { /* OS/2 BITMAPCOREHEADER: 16-bit sizes, 3-byte palette entries */
        w = le16(d + 4), h = (int16_t)le16(d + 6), bpp = le16(d + 10);
    } else {
        w = (int32_t)le32(d + 4), h = (int32_t)le32(d + 8), bpp = le16(d + 14), comp = (int)le32(d + 16);
        n_colors = le32(d + 32);
        if (comp == 3 || comp == 6) { /* BI_BITFIELDS: masks follow a 40-byte header */
            if (14 + 40 + 12 > n) return corrupt(ctx, "BMP", "truncated bit masks");
            for (int i = 0; i < 3; i++) masks[i] = le32(p + 14 + 40 + 4 * i);
        } else if (comp != 0) {
            return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED,
                             "ImageDecoder: BMP compression %d (RLE/JPEG/PNG) is not supported", comp);
        }
    }
    int top_down = h < 0;
    if (top_down) h = -h;
    if (bpp != 1 && bpp != 4 && bpp != 8 && bpp != 16 && bpp != 24 && bpp != 32)
        return corrupt(ctx, "BMP", "unsupported bits per pixel");
    if (bpp == 16 && !masks[0] && !masks[1] && !masks[2])
        masks[0] = 0x7c00, masks[1] = 0x03e0, masks[2] = 0x001f; /* default 5-5-5 */
    if (bpp == 32 && !masks[0] && !masks[1] && !masks[2])
        masks[0] = 0xff0000, masks[1] = 0xff00, masks[2] = 0xff;
    /* palette */
    uint8_t pal[256][3];
    memset(pal, 0, sizeof pal);
    if (bpp <= 8) {
        uint32_t max = 1u << bpp, entry = hs == 12 ? 3 : 4;
        if (n_colors == 0 || n_colors > max) n_colors = max;
        size_t at = 14 + hs + (comp == 3 ? 12 : 0);
        if (at + (size_t)n_colors * entry > n) return corrupt(ctx, "BMP", "truncated palette");
        for (uint32_t i = 0; i < n_colors; i++) { /* entries are B, G, R(, reserved) */
            pal[i][0] = p[at + i * entry + 2], pal[i][1] = p[at + i * entry + 1];
            pal[i][2] = p[at + i * entry];
        }
    }
    if (w <= 0 || h <= 0 || w > MAX_PIXELS || h > MAX_PIXELS) return corrupt(ctx, "BMP", "bad size");
    size_t stride = (size_t)(((w * bpp + 31) / 32) * 4);
    if (off > n || (size_t)h > (n - off) / stride) return corrupt(ctx, "BMP", "truncated pixel data");
    KILN_TRY(alloc_img(ctx, im, w, h));
    for (int64_t y = 0; y < h; y++) {
        const uint8_t *row = p + off + (size_t)(top_down ? y : h - 1 - y) * stride;
        uint8_t *out = im->rgb + y * w * 3;
        for (int64_t x = 0; x < w; x++, out += 3) {
            if (bpp <= 8) {
                int64_t bit = x * bpp;
                uint32_t idx = (row[bit / 8] >> (8 - bpp - bit % 8)) & ((1u << bpp) - 1);
                memcpy(out, pal[idx], 3);
            } else if (bpp == 24) {
                out[0] = row[x * 3 + 2], out[1] = row[x * 3 + 1], out[2] = row[x * 3];
            } else {
                uint32_t v = bpp == 16 ? le16(row + x * 2) : le32(row + x * 4);
                for (int c = 0; c < 3; c++) out[c] = from_mask(v, masks[c]);
            }
        }
    }
    return KILN_OK;
}

/* ---- PNM (P1..P6) ---- */

typedef struct pnm_reader {
    const uint8_t *p;
    size_t n, at;
} pnm_reader;

static int is_space(uint8_t c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

/* Next decimal number of the header or of ASCII pixel data, skipping blanks and # comments. */
static int pnm_number(pnm_reader *r, uint32_t *v) {
    for (;;) {
        while (r->at < r->n && is_space(r->p[r->at])) r->at++;
        if (r->at < r->n && r->p[r->at] == '#') {
            while (r->at < r->n && r->p[r->at] != '\n' && r->p[r->at] != '\r') r->at++;
            continue;
        }
        break;
    }
    if (r->at >= r->n || r->p[r->at] < '0' || r->p[r->at] > '9') return 0;
    uint64_t x = 0;
    while (r->at < r->n && r->p[r->at] >= '0' && r->p[r->at] <= '9') {
        x = x * 10 + (r->p[r->at++] - '0');
        if (x > 0xffffffu) return 0;
    }
    *v = (uint32_t)x;
    return 1;
}

/* One P1 digit: ASCII bitmaps may run their 0/1 digits together. */
static int pnm_bit(pnm_reader *r, uint32_t *v) {
    while (r->at < r->n && (is_space(r->p[r->at]) || r->p[r->at] == '#')) {
        if (r->p[r->at] == '#')
            while (r->at < r->n && r->p[r->at] != '\n') r->at++;
        else
            r->at++;
    }
    if (r->at >= r->n || (r->p[r->at] != '0' && r->p[r->at] != '1')) return 0;
    *v = (uint32_t)(r->p[r->at++] - '0');
    return 1;
}

static kiln_status decode_pnm(kiln_ctx *ctx, const uint8_t *p, size_t n, img *im) {
    int kind = p[1] - '0';
    pnm_reader r = {p, n, 2};
    uint32_t w, h, maxval = 1;
    if (!pnm_number(&r, &w) || !pnm_number(&r, &h) || ((kind != 1 && kind != 4) && !pnm_number(&r, &maxval)))
        return corrupt(ctx, "PNM", "bad header");
    if (maxval == 0 || maxval > 65535) return corrupt(ctx, "PNM", "maxval must be 1..65535");
    if (kind >= 4) { /* exactly one blank separates the header from binary data */
        if (r.at >= n || !is_space(p[r.at])) return corrupt(ctx, "PNM", "no blank after the header");
        r.at++;
    }
    KILN_TRY(alloc_img(ctx, im, w, h));
    int channels = (kind == 3 || kind == 6) ? 3 : 1, wide = maxval > 255;
    size_t row_bytes = kind == 4 ? (w + 7) / 8 : (size_t)w * channels * (wide ? 2 : 1);
    if (kind >= 4 && (size_t)h > (n - r.at) / (row_bytes ? row_bytes : 1))
        return corrupt(ctx, "PNM", "truncated pixel data");
    for (uint32_t y = 0; y < h; y++) {
        for (uint32_t x = 0; x < w; x++) {
            uint8_t *out = im->rgb + ((size_t)y * w + x) * 3;
            uint32_t s[3] = {0, 0, 0};
            if (kind == 1 || kind == 4) { /* bitmaps: 1 is black */
                uint32_t bit;
                if (kind == 4) bit = (p[r.at + y * row_bytes + x / 8] >> (7 - x % 8)) & 1;
                else if (!pnm_bit(&r, &bit)) return corrupt(ctx, "PNM", "truncated bitmap");
                out[0] = out[1] = out[2] = bit ? 0 : 255;
                continue;
            }
            for (int c = 0; c < channels; c++) {
                if (kind <= 3) {
                    if (!pnm_number(&r, &s[c]) || s[c] > maxval) return corrupt(ctx, "PNM", "bad sample");
                } else {
                    const uint8_t *q = p + r.at + y * row_bytes + ((size_t)x * channels + c) * (wide ? 2 : 1);
                    s[c] = wide ? (uint32_t)(q[0] << 8 | q[1]) : q[0];
                    if (s[c] > maxval) s[c] = maxval;
                }
                s[c] = maxval == 255 ? s[c] : (s[c] * 255 + maxval / 2) / maxval;
            }
            for (int c = 0; c < 3; c++) out[c] = (uint8_t)s[channels == 3 ? c : 0];
        }
    }
    return KILN_OK;
}

/* ---- dispatch ---- */

/* Library formats, told apart by their magic bytes; each decoder exists only in builds that link
 * its library, the others fail naming the Debian package that provides it. */
typedef kiln_status (*lib_decoder)(kiln_ctx *, const uint8_t *, size_t, uint8_t **, int64_t *, int64_t *);

static kiln_status decode_with_library(kiln_ctx *ctx, const uint8_t *p, size_t n, img *im, int *handled) {
    const char *need = NULL;
    lib_decoder dec = NULL;
    *handled = 1;
    if (n >= 3 && p[0] == 0xff && p[1] == 0xd8 && p[2] == 0xff) {
        need = "JPEG decoding needs libjpeg (libjpeg62-turbo-dev)";
#ifdef KILN_HAVE_JPEG
        dec = kimg_decode_jpeg;
#endif
    } else if (n >= 8 && !memcmp(p, "\x89PNG\r\n\x1a\n", 8)) {
        need = "PNG decoding needs libpng (libpng-dev)";
#ifdef KILN_HAVE_PNG
        dec = kimg_decode_png;
#endif
    } else if (n >= 4 && (!memcmp(p, "II*\0", 4) || !memcmp(p, "MM\0*", 4))) {
        need = "TIFF decoding needs libtiff (libtiff-dev)";
#ifdef KILN_HAVE_TIFF
        dec = kimg_decode_tiff;
#endif
    } else if (n >= 12 && !memcmp(p, "RIFF", 4) && !memcmp(p + 8, "WEBP", 4)) {
        need = "WebP decoding needs libwebp (libwebp-dev)";
#ifdef KILN_HAVE_WEBP
        dec = kimg_decode_webp;
#endif
    } else if ((n >= 12 && !memcmp(p, "\0\0\0\x0cjP  \r\n\x87\n", 12)) ||
               (n >= 4 && !memcmp(p, "\xff\x4f\xff\x51", 4))) {
        need = "JPEG2000 decoding needs OpenJPEG (libopenjp2-7-dev)";
#ifdef KILN_HAVE_OPENJP2
        dec = kimg_decode_jpeg2000;
#endif
    } else {
        *handled = 0;
        return KILN_OK;
    }
    if (!dec)
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "ImageDecoder: %s, which this build does not link", need);
    return dec(ctx, p, n, &im->rgb, &im->w, &im->h);
}

static kiln_status check_input(kiln_ctx *ctx, int *fmt) {
    KILN_TRY(parse_format(ctx, fmt));
    kiln_tensor *in;
    KILN_TRY(kiln_need_input(ctx, 0, &in));
    KILN_TRY(kiln_check_dtype(ctx, in, 0, 1, KILN_DTYPE_UINT8));
    if (in->rank > 1) {
        char b[96];
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "encoded_stream must be 1-D bytes, got %s",
                         kiln_shape_str(in, b, sizeof b));
    }
    return KILN_OK;
}

/* Only static inference calls this (the op is dynamic): the size is known after decoding. */
kiln_status kmisc_image_decoder_infer(kiln_ctx *ctx) {
    int fmt;
    KILN_TRY(check_input(ctx, &fmt));
    int64_t d[3] = {KILN_DIM_UNKNOWN, KILN_DIM_UNKNOWN, fmt == FMT_GRAY ? 1 : 3};
    return kiln_set_output(ctx, 0, KILN_DTYPE_UINT8, 3, d);
}

kiln_status kmisc_image_decoder_compute(kiln_ctx *ctx) {
    int fmt;
    KILN_TRY(check_input(ctx, &fmt));
    const kiln_tensor *in = kiln_input(ctx, 0);
    const uint8_t *p = in->data;
    size_t n = (size_t)kiln_numel(in);
    img im = {0, 0, NULL};
    int handled;
    kiln_status st = decode_with_library(ctx, p, n, &im, &handled);
    if (handled)
        ; /* st holds the library decoder's result */
    else if (n >= 2 && p[0] == 'B' && p[1] == 'M')
        st = decode_bmp(ctx, p, n, &im);
    else if (n >= 2 && p[0] == 'P' && p[1] >= '1' && p[1] <= '6')
        st = decode_pnm(ctx, p, n, &im);
    else
        st = KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                       "ImageDecoder: unrecognised image format (not BMP, PNM, JPEG, PNG, TIFF, WebP or "
                       "JPEG2000)");
    if (st == KILN_OK) {
        int c = fmt == FMT_GRAY ? 1 : 3;
        int64_t d[3] = {im.h, im.w, c}, npix = im.w * im.h;
        st = kiln_alloc_output(ctx, 0, KILN_DTYPE_UINT8, 3, d);
        kiln_tensor *y = st == KILN_OK ? kiln_output(ctx, 0) : NULL;
        uint8_t *o = y ? y->data : NULL;
        for (int64_t i = 0; o && i < npix; i++) {
            const uint8_t *s = im.rgb + i * 3;
            if (fmt == FMT_RGB) o[i * 3] = s[0], o[i * 3 + 1] = s[1], o[i * 3 + 2] = s[2];
            else if (fmt == FMT_BGR) o[i * 3] = s[2], o[i * 3 + 1] = s[1], o[i * 3 + 2] = s[0];
            else o[i] = (uint8_t)((s[0] * 19595u + s[1] * 38470u + s[2] * 7471u + 0x8000u) >> 16);
        }
    }
    free(im.rgb);
    return st;
}
