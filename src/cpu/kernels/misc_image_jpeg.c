/* ImageDecoder's JPEG path through libjpeg(-turbo), built only when CMake found it. Decoding uses
 * libjpeg's defaults (ISLOW DCT, fancy upsampling), the same settings Pillow (the ONNX reference)
 * decodes with, so the pixels match it exactly. */
#ifdef KILN_HAVE_JPEG
#include "../../ops/op.h"

#include <setjmp.h>
#include <stdio.h> /* jpeglib.h uses FILE without including stdio.h */
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <jerror.h> /* JWRN_JPEG_EOF */

kiln_status kimg_check_size(kiln_ctx *ctx, const char *format, int64_t w, int64_t h);
kiln_status kimg_alloc_rgb(kiln_ctx *ctx, const char *format, int64_t w, int64_t h, uint8_t **rgb);

/* Hostile progressive files can hold thousands of tiny scans, each a pass over the whole image;
 * no real encoder writes anywhere near this many. */
#define MAX_SCANS 1000

typedef struct jpeg_guard {
    struct jpeg_error_mgr mgr;
    struct jpeg_progress_mgr progress;
    jmp_buf env;
    char msg[JMSG_LENGTH_MAX];
    int truncated;
} jpeg_guard;

/* libjpeg's default error_exit calls exit(); ours jumps back to kimg_decode_jpeg, which is still
 * on the stack, so the error becomes a KILN_FAIL and never leaves kiln. */
static void on_error(j_common_ptr cinfo) {
    jpeg_guard *g = (jpeg_guard *)cinfo->err;
    cinfo->err->format_message(cinfo, g->msg);
    longjmp(g->env, 1);
}

/* Warnings are dropped (Pillow ignores them too) except running out of data: libjpeg would pad
 * the image with grey, while Pillow reports a truncated file, so this is an error here too. */
static void on_message(j_common_ptr cinfo, int level) {
    jpeg_guard *g = (jpeg_guard *)cinfo->err;
    if (level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF) g->truncated = 1;
}

static void on_progress(j_common_ptr cinfo) {
    j_decompress_ptr d = (j_decompress_ptr)cinfo;
    if (cinfo->is_decompressor && d->input_scan_number > MAX_SCANS) {
        jpeg_guard *g = (jpeg_guard *)cinfo->err;
        snprintf(g->msg, sizeof g->msg, "more than %d scans", MAX_SCANS);
        longjmp(g->env, 1);
    }
}

kiln_status kimg_decode_jpeg(kiln_ctx *ctx, const uint8_t *p, size_t n, uint8_t **rgb, int64_t *w, int64_t *h) {
    struct jpeg_decompress_struct cinfo;
    jpeg_guard g;
    memset(&g, 0, sizeof g);
    uint8_t *volatile gray_row = NULL; /* volatile: read after a longjmp */
    cinfo.err = jpeg_std_error(&g.mgr);
    g.mgr.error_exit = on_error;
    g.mgr.emit_message = on_message;
    if (setjmp(g.env)) {
        jpeg_destroy_decompress(&cinfo);
        free(gray_row);
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "ImageDecoder: corrupt JPEG stream: %s", g.msg);
    }
    jpeg_create_decompress(&cinfo);
    g.progress.progress_monitor = on_progress;
    cinfo.progress = &g.progress;
    jpeg_mem_src(&cinfo, p, (unsigned long)n);
    jpeg_read_header(&cinfo, TRUE);
    kiln_status st = kimg_check_size(ctx, "JPEG", cinfo.image_width, cinfo.image_height);
    if (st == KILN_OK && cinfo.jpeg_color_space != JCS_GRAYSCALE && cinfo.jpeg_color_space != JCS_YCbCr &&
        cinfo.jpeg_color_space != JCS_RGB)
        st = KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED,
                       "ImageDecoder: JPEG colour space %d (CMYK/YCCK) is not supported",
                       (int)cinfo.jpeg_color_space);
    if (st != KILN_OK) {
        jpeg_destroy_decompress(&cinfo);
        return st;
    }
    int gray = cinfo.jpeg_color_space == JCS_GRAYSCALE;
    cinfo.out_color_space = gray ? JCS_GRAYSCALE : JCS_RGB;
    jpeg_start_decompress(&cinfo);
    int64_t W = cinfo.output_width, H = cinfo.output_height;
    st = kimg_alloc_rgb(ctx, "JPEG", W, H, rgb);
    if (st == KILN_OK && gray && !(gray_row = malloc((size_t)W)))
        st = KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
    if (st != KILN_OK) {
        jpeg_destroy_decompress(&cinfo);
        free(gray_row);
        return st;
    }
    while (cinfo.output_scanline < cinfo.output_height) {
        uint8_t *dst = *rgb + (size_t)cinfo.output_scanline * W * 3;
        JSAMPROW row = gray ? gray_row : dst;
        if (jpeg_read_scanlines(&cinfo, &row, 1) != 1) break;
        if (gray) /* grey pixels as R = G = B: the luma of that is the grey value again */
            for (int64_t x = W - 1; x >= 0; x--) dst[x * 3] = dst[x * 3 + 1] = dst[x * 3 + 2] = gray_row[x];
        if (g.truncated) break;
    }
    int truncated = g.truncated || cinfo.output_scanline < cinfo.output_height;
    if (!truncated) {
        jpeg_finish_decompress(&cinfo);
        truncated = g.truncated;
    }
    jpeg_destroy_decompress(&cinfo);
    free(gray_row);
    if (truncated) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "ImageDecoder: truncated JPEG stream");
    *w = W, *h = H;
    return KILN_OK;
}
#else
/* ISO C wants at least one declaration in a translation unit. */
typedef int kiln_no_jpeg;
#endif
