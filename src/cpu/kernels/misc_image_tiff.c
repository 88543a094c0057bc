/* ImageDecoder's TIFF path through libtiff, built only when CMake found it. The first directory
 * (page) is read through TIFFReadRGBAImage, which handles every photometric/compression/layout
 * libtiff knows; for 8-bit RGB and grey images that gives the stored samples, as Pillow (the ONNX
 * reference) does. */
#ifdef KILN_HAVE_TIFF
#include "../../ops/op.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tiffio.h>

kiln_status kimg_check_size(kiln_ctx *ctx, const char *format, int64_t w, int64_t h);
kiln_status kimg_alloc_rgb(kiln_ctx *ctx, const char *format, int64_t w, int64_t h, uint8_t **rgb);

/* The memory file libtiff reads through, plus the first error it reported. */
typedef struct tiff_src {
    const uint8_t *p;
    toff_t n, at;
    int failed;
    char msg[200];
} tiff_src;

static tmsize_t t_read(thandle_t h, void *buf, tmsize_t len) {
    tiff_src *s = h;
    if (len < 0) return -1;
    toff_t left = s->at < s->n ? s->n - s->at : 0;
    if ((toff_t)len > left) len = (tmsize_t)left;
    memcpy(buf, s->p + s->at, (size_t)len);
    s->at += (toff_t)len;
    return len;
}
static tmsize_t t_write(thandle_t h, void *buf, tmsize_t len) { return -1; } /* read-only */
static toff_t t_seek(thandle_t h, toff_t off, int whence) {
    tiff_src *s = h;
    toff_t base = whence == SEEK_CUR ? s->at : whence == SEEK_END ? s->n : 0;
    if (off > UINT64_MAX - base) return (toff_t)-1;
    s->at = base + off; /* past the end is allowed: reads there return nothing */
    return s->at;
}
static int t_close(thandle_t h) { return 0; }
static toff_t t_size(thandle_t h) { return ((tiff_src *)h)->n; }
static int t_map(thandle_t h, void **base, toff_t *size) { return 0; } /* no mapping: reads only */
static void t_unmap(thandle_t h, void *base, toff_t size) {}

/* Per-handle handlers (libtiff >= 4.5), so nothing goes to stderr and no global state is touched
 * (other sessions may decode at the same time). */
static int t_error(TIFF *tif, void *user, const char *module, const char *fmt, va_list ap) {
    tiff_src *s = user;
    if (!s->failed) vsnprintf(s->msg, sizeof s->msg, fmt, ap);
    s->failed = 1;
    return 1;
}
static int t_warning(TIFF *tif, void *user, const char *module, const char *fmt, va_list ap) { return 1; }

kiln_status kimg_decode_tiff(kiln_ctx *ctx, const uint8_t *p, size_t n, uint8_t **rgb, int64_t *w, int64_t *h) {
    tiff_src src = {p, n, 0, 0, ""};
    TIFFOpenOptions *opts = TIFFOpenOptionsAlloc();
    if (!opts) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
    TIFFOpenOptionsSetErrorHandlerExtR(opts, t_error, &src);
    TIFFOpenOptionsSetWarningHandlerExtR(opts, t_warning, &src);
    /* libtiff's own buffers (strips, tiles, directory arrays) stay bounded for hostile headers. */
    TIFFOpenOptionsSetMaxSingleMemAlloc(opts, (tmsize_t)256 << 20);
    TIFF *tif = TIFFClientOpenExt("ImageDecoder", "rm", &src, t_read, t_write, t_seek, t_close, t_size, t_map,
                                  t_unmap, opts);
    TIFFOpenOptionsFree(opts);
    if (!tif)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "ImageDecoder: corrupt TIFF stream: %s",
                         src.failed ? src.msg : "cannot open");
    uint32_t W = 0, H = 0;
    TIFFGetField(tif, TIFFTAG_IMAGEWIDTH, &W);
    TIFFGetField(tif, TIFFTAG_IMAGELENGTH, &H);
    kiln_status st = kimg_check_size(ctx, "TIFF", W, H);
    char emsg[1024] = "";
    if (st == KILN_OK && !TIFFRGBAImageOK(tif, emsg))
        st = KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "ImageDecoder: unsupported TIFF image: %s", emsg);
    uint32_t *raster = NULL;
    if (st == KILN_OK && !(raster = malloc((size_t)W * H * 4)))
        st = KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
    /* stop_on_error = 1: a truncated strip fails instead of leaving part of the image blank */
    if (st == KILN_OK && (!TIFFReadRGBAImageOriented(tif, W, H, raster, ORIENTATION_TOPLEFT, 1) || src.failed))
        st = KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "ImageDecoder: corrupt TIFF stream: %s",
                       src.failed ? src.msg : "cannot read the image");
    if (st == KILN_OK) st = kimg_alloc_rgb(ctx, "TIFF", W, H, rgb);
    if (st == KILN_OK) {
        size_t npix = (size_t)W * H;
        for (size_t i = 0; i < npix; i++) { /* ABGR packed in a uint32: R is the low byte */
            (*rgb)[i * 3] = (uint8_t)TIFFGetR(raster[i]);
            (*rgb)[i * 3 + 1] = (uint8_t)TIFFGetG(raster[i]);
            (*rgb)[i * 3 + 2] = (uint8_t)TIFFGetB(raster[i]);
        }
        *w = W, *h = H;
    }
    free(raster);
    TIFFClose(tif);
    return st;
}
#else
typedef int kiln_no_tiff; /* ISO C wants at least one declaration in a translation unit */
#endif
