/* ImageDecoder's JPEG2000 path (JP2 files and raw J2K codestreams) through OpenJPEG, built only
 * when CMake found it. Grey (+alpha) and RGB(+alpha) images with full-resolution components are
 * mapped to 8 bits with the same shift-and-offset as Pillow (the ONNX reference). */
#ifdef KILN_HAVE_OPENJP2
#include "../../ops/op.h"

#include <stdio.h>
#include <string.h>

#include <openjpeg.h>

kiln_status kimg_check_size(kiln_ctx *ctx, const char *format, int64_t w, int64_t h);
kiln_status kimg_alloc_rgb(kiln_ctx *ctx, const char *format, int64_t w, int64_t h, uint8_t **rgb);

typedef struct j2k_src {
    const uint8_t *p;
    OPJ_UINT64 n, at;
    char msg[200]; /* first error OpenJPEG reported */
} j2k_src;

static OPJ_SIZE_T j_read(void *buf, OPJ_SIZE_T len, void *user) {
    j2k_src *s = user;
    if (s->at >= s->n) return (OPJ_SIZE_T)-1; /* OpenJPEG's end-of-stream marker */
    if (len > s->n - s->at) len = (OPJ_SIZE_T)(s->n - s->at);
    memcpy(buf, s->p + s->at, len);
    s->at += len;
    return len;
}
static OPJ_OFF_T j_skip(OPJ_OFF_T off, void *user) {
    j2k_src *s = user;
    if (off < 0 ? (OPJ_UINT64)-off > s->at : (OPJ_UINT64)off > s->n - s->at) return -1;
    s->at += off;
    return off;
}
static OPJ_BOOL j_seek(OPJ_OFF_T off, void *user) {
    j2k_src *s = user;
    if (off < 0 || (OPJ_UINT64)off > s->n) return OPJ_FALSE;
    s->at = (OPJ_UINT64)off;
    return OPJ_TRUE;
}
static void j_error(const char *msg, void *user) {
    j2k_src *s = user;
    if (!s->msg[0]) {
        snprintf(s->msg, sizeof s->msg, "%s", msg);
        size_t k = strlen(s->msg); /* OpenJPEG's messages end with a newline */
        if (k && s->msg[k - 1] == '\n') s->msg[k - 1] = 0;
    }
}
static void j_quiet(const char *msg, void *user) {}

/* Pillow's mapping of a prec-bit sample to 8 bits: re-centre signed data, then shift (rounding
 * when shifting right). */
static uint8_t to8(OPJ_INT32 v, const opj_image_comp_t *c) {
    int shift = 8 - (int)c->prec;
    int64_t off = c->sgnd ? (int64_t)1 << (c->prec - 1) : 0;
    if (shift < 0) off += (int64_t)1 << (-shift - 1);
    int64_t x = shift < 0 ? (v + off) >> -shift : (v + off) << shift;
    return (uint8_t)(x < 0 ? 0 : x > 255 ? 255 : x);
}

kiln_status kimg_decode_jpeg2000(kiln_ctx *ctx, const uint8_t *p, size_t n, uint8_t **rgb, int64_t *w,
                                 int64_t *h) {
    j2k_src src = {p, n, 0, ""};
    int jp2 = n >= 12 && !memcmp(p, "\0\0\0\x0cjP  \r\n\x87\n", 12);
    opj_codec_t *codec = opj_create_decompress(jp2 ? OPJ_CODEC_JP2 : OPJ_CODEC_J2K);
    opj_stream_t *stream = opj_stream_create(OPJ_J2K_STREAM_CHUNK_SIZE, OPJ_TRUE);
    opj_image_t *image = NULL;
    kiln_status st = KILN_OK;
    if (!codec || !stream) {
        st = KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
        goto done;
    }
    opj_set_error_handler(codec, j_error, &src);
    opj_set_warning_handler(codec, j_quiet, &src);
    opj_set_info_handler(codec, j_quiet, &src);
    opj_stream_set_read_function(stream, j_read);
    opj_stream_set_skip_function(stream, j_skip);
    opj_stream_set_seek_function(stream, j_seek);
    opj_stream_set_user_data(stream, &src, NULL);
    opj_stream_set_user_data_length(stream, n);
    opj_dparameters_t prm;
    opj_set_default_decoder_parameters(&prm);
    if (!opj_setup_decoder(codec, &prm) || !opj_read_header(stream, codec, &image) || !image) {
        st = KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "ImageDecoder: corrupt JPEG2000 stream: %s",
                       src.msg[0] ? src.msg : "bad header");
        goto done;
    }
    /* checked before opj_decode, which allocates every component at full size */
    int64_t W = (int64_t)image->x1 - image->x0, H = (int64_t)image->y1 - image->y0;
    if ((st = kimg_check_size(ctx, "JPEG2000", W, H)) != KILN_OK) goto done;
    if (image->numcomps < 1 || image->numcomps > 4 || image->color_space == OPJ_CLRSPC_SYCC ||
        image->color_space == OPJ_CLRSPC_EYCC || image->color_space == OPJ_CLRSPC_CMYK) {
        st = KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED,
                       "ImageDecoder: JPEG2000 with %u components in colour space %d is not supported",
                       image->numcomps, (int)image->color_space);
        goto done;
    }
    if (!opj_decode(codec, stream, image) || !opj_end_decompress(codec, stream)) {
        st = KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "ImageDecoder: corrupt JPEG2000 stream: %s",
                       src.msg[0] ? src.msg : "cannot decode");
        goto done;
    }
    int color = image->numcomps >= 3; /* 1: grey, 2: grey + alpha, 3: RGB, 4: RGB + alpha */
    for (int c = 0; c < (color ? 3 : 1); c++) {
        const opj_image_comp_t *k = &image->comps[c];
        if (!k->data || k->w != (OPJ_UINT32)W || k->h != (OPJ_UINT32)H || k->prec < 1 || k->prec > 31) {
            st = KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED,
                           "ImageDecoder: JPEG2000 with subsampled or reduced components is not supported");
            goto done;
        }
    }
    if ((st = kimg_alloc_rgb(ctx, "JPEG2000", W, H, rgb)) != KILN_OK) goto done;
    for (int64_t i = 0; i < W * H; i++)
        for (int c = 0; c < 3; c++) {
            const opj_image_comp_t *k = &image->comps[color ? c : 0];
            (*rgb)[i * 3 + c] = to8(k->data[i], k);
        }
    *w = W, *h = H;
done:
    if (image) opj_image_destroy(image);
    if (stream) opj_stream_destroy(stream);
    if (codec) opj_destroy_codec(codec);
    return st;
}
#else
typedef int kiln_no_openjp2; /* ISO C wants at least one declaration in a translation unit */
#endif
