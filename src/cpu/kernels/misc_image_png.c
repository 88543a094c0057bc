/* ImageDecoder's PNG path through libpng, built only when CMake found it. Every PNG flavour is
 * turned into 8-bit RGB the way Pillow (the ONNX reference) reads it: 16-bit samples keep their high
 * byte, 1/2/4-bit grey is scaled to 0..255, palettes are expanded, and alpha (or tRNS) is dropped
 * without compositing. */
#ifdef KILN_HAVE_PNG
#include "../../ops/op.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <png.h>

kiln_status kimg_check_size(kiln_ctx *ctx, const char *format, int64_t w, int64_t h);
kiln_status kimg_alloc_rgb(kiln_ctx *ctx, const char *format, int64_t w, int64_t h, uint8_t **rgb);

typedef struct png_src {
    const uint8_t *p;
    size_t n, at;
    char msg[160];
} png_src;

static void on_read(png_structp png, png_bytep out, png_size_t len) {
    png_src *s = png_get_io_ptr(png);
    if (len > s->n - s->at) png_error(png, "truncated stream");
    memcpy(out, s->p + s->at, len);
    s->at += len;
}

/* libpng must not return from an error; we keep the message and jump back into kimg_decode_png
 * (its setjmp is on the stack), so errors stay inside kiln. */
static void on_error(png_structp png, png_const_charp msg) {
    png_src *s = png_get_error_ptr(png);
    snprintf(s->msg, sizeof s->msg, "%s", msg);
    png_longjmp(png, 1);
}

static void on_warning(png_structp png, png_const_charp msg) { (void)png, (void)msg; }

kiln_status kimg_decode_png(kiln_ctx *ctx, const uint8_t *p, size_t n, uint8_t **rgb, int64_t *w, int64_t *h) {
    png_src src = {p, n, 0, ""};
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &src, on_error, on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) {
        png_destroy_read_struct(&png, NULL, NULL);
        return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
    }
    png_bytep *volatile rows = NULL; /* volatile: freed after a longjmp */
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &info, NULL);
        free(rows);
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "ImageDecoder: corrupt PNG stream: %s", src.msg);
    }
    png_set_read_fn(png, &src, on_read);
    /* libpng's own cap (1,000,000 x 1,000,000 by default) is far above ours; set ours so that it
     * refuses hostile headers before allocating; kimg_check_size also caps the pixel count. */
    png_set_user_limits(png, 1u << 28, 1u << 28);
    /* Pillow ignores CRC errors in ancillary chunks but rejects bad critical chunks; libpng's
     * defaults are the same. Decompressed chunk sizes are capped so a zip bomb in e.g. iCCP fails. */
    png_set_chunk_malloc_max(png, 64u << 20);
    png_read_info(png, info);
    png_uint_32 W = png_get_image_width(png, info), H = png_get_image_height(png, info);
    int depth = png_get_bit_depth(png, info), type = png_get_color_type(png, info);
    kiln_status st = kimg_check_size(ctx, "PNG", W, H);
    if (st != KILN_OK) {
        png_destroy_read_struct(&png, &info, NULL);
        return st;
    }
    if (type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (type == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (depth == 16) png_set_strip_16(png); /* the high byte, as Pillow's ";16B" raw modes keep */
    /* unconditionally: palette expansion also turns a tRNS chunk into an alpha channel */
    png_set_strip_alpha(png);
    if (type == PNG_COLOR_TYPE_GRAY || type == PNG_COLOR_TYPE_GRAY_ALPHA) png_set_gray_to_rgb(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    if (png_get_rowbytes(png, info) != (size_t)W * 3) png_error(png, "unexpected row layout");
    st = kimg_alloc_rgb(ctx, "PNG", W, H, rgb);
    if (st == KILN_OK && !(rows = malloc(sizeof(png_bytep) * H)))
        st = KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
    if (st != KILN_OK) {
        png_destroy_read_struct(&png, &info, NULL);
        return st;
    }
    for (png_uint_32 y = 0; y < H; y++) rows[y] = *rgb + (size_t)y * W * 3;
    png_read_image(png, rows);
    /* Pillow stops at the last image row; a missing IEND is no error for it either. */
    png_destroy_read_struct(&png, &info, NULL);
    free(rows);
    *w = W, *h = H;
    return KILN_OK;
}
#else
typedef int kiln_no_png; /* ISO C wants at least one declaration in a translation unit */
#endif
