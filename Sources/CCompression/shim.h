// The decoders of HTTP content codings (RFC 9110 §8.4.1): zlib (gzip, deflate), brotli (br) and
// zstd, the same libraries libcurl links. The agent decodes bodies itself (`ContentDecoder`) so
// that a paused transfer holds one bounded piece of decoded output, not whatever libcurl's
// decoder made of a whole network read, and so that each decoder's memory is counted.
#ifndef SONDE_CCOMPRESSION_SHIM_H
#define SONDE_CCOMPRESSION_SHIM_H

#define ZSTD_STATIC_LINKING_ONLY  // ZSTD_createDStream_advanced: a counting allocator
#include <zlib.h>
#include <brotli/decode.h>
#include <zstd.h>
#include <zstd_errors.h>  // ZSTD_getErrorCode: which error, not only its name
#include <stdlib.h>

// zlib's inflateInit2 is a macro over inflateInit2_ with the library's version and the stream's size.
static inline int sonde_inflate_init(z_stream *stream, int windowBits) {
    return inflateInit2(stream, windowBits);
}

#endif
