/* ImageDecoder's WebP path through libwebp, built only when CMake found it. libwebp's default
 * decode (fancy upsampling for lossy files) is what Pillow, the ONNX reference, uses too; alpha is
 * dropped. Animated files (which need libwebpdemux) are refused. */
#ifdef KILN_HAVE_WEBP
#include "../../ops/op.h"

#include <stdlib.h>

#include <webp/decode.h>

kiln_status kimg_check_size(kiln_ctx *ctx, const char *format, int64_t w, int64_t h);
kiln_status kimg_alloc_rgb(kiln_ctx *ctx, const char *format, int64_t w, int64_t h, uint8_t **rgb);

kiln_status kimg_decode_webp(kiln_ctx *ctx, const uint8_t *p, size_t n, uint8_t **rgb, int64_t *w, int64_t *h) {
    WebPBitstreamFeatures f;
    VP8StatusCode rc = WebPGetFeatures(p, n, &f);
    if (rc != VP8_STATUS_OK)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "ImageDecoder: corrupt WebP stream (libwebp status %d)",
                         (int)rc);
    if (f.has_animation)
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "ImageDecoder: animated WebP is not supported");
    KILN_TRY(kimg_alloc_rgb(ctx, "WebP", f.width, f.height, rgb));
    size_t stride = (size_t)f.width * 3, size = stride * (size_t)f.height;
    /* decodes straight into our buffer, which is exactly stride * height bytes: libwebp checks it */
    if (!WebPDecodeRGBInto(p, n, *rgb, size, (int)stride))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "ImageDecoder: corrupt or truncated WebP stream");
    *w = f.width, *h = f.height;
    return KILN_OK;
}
#else
typedef int kiln_no_webp; /* ISO C wants at least one declaration in a translation unit */
#endif
