/* ModelProto -> kiln_model. Field numbers are those of onnx.proto (IR versions 3 to 11).
 * The model file is mapped read-only; raw initializer bytes are used in place when they are
 * aligned for their element type, and copied once otherwise (counted in copied_init_bytes). */
#include "../core/graph.h"
#include "../core/dtype.h"
#include "pb.h"
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_GRAPH_DEPTH 64

typedef struct loader {
    kiln_model *m;
    kiln_err *e;
    int depth;
    char real_dir[PATH_MAX]; /* the model's folder with links resolved ("" until external data needs it) */
    const kiln_load_overrides *ov; /* initializers the caller supplies, or NULL */
    unsigned char *ov_used;        /* per override: an initializer took it */
} loader;

static kiln_status bad(loader *L, const char *what) {
    return kiln_fail(L->e, KILN_ERR_INVALID_MODEL, "malformed model: %s", what);
}

static char *dup_bytes(const uint8_t *p, size_t n) {
    char *s = malloc(n + 1);
    if (!s) return NULL;
    if (n) memcpy(s, p, n);
    s[n] = 0;
    return s;
}

static void *aligned_block(size_t bytes) {
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes + 64)) return NULL;
    memset(p, 0, bytes + 64);
    return p;
}

/* ---------------------------------------------------------------- external data files */

static int path_is_safe(const char *loc) {
    if (!loc[0] || loc[0] == '/') return 0;
    for (const char *p = loc; *p;) {
        const char *q = strchr(p, '/');
        size_t n = q ? (size_t)(q - p) : strlen(p);
        if (n == 2 && p[0] == '.' && p[1] == '.') return 0;
        if (!q) break;
        p = q + 1;
    }
    return 1;
}

static const char *file_kind(mode_t mode) {
    if (S_ISDIR(mode)) return "a directory";
    if (S_ISFIFO(mode)) return "a named pipe (FIFO)";
    if (S_ISCHR(mode) || S_ISBLK(mode)) return "a device";
    if (S_ISSOCK(mode)) return "a socket";
    return "a special file";
}

/* Maps a regular file read-only. O_NONBLOCK keeps a named pipe from blocking the open (it is then
 * refused by fstat, before any read); extra_flags adds O_NOFOLLOW for external data. */
static kiln_status map_file(loader *L, const char *path, int extra_flags, kiln_mapping **out) {
    kiln_model *m = L->m;
    for (int i = 0; i < m->n_maps; i++)
        if (m->maps[i].path && !strcmp(m->maps[i].path, path)) {
            *out = &m->maps[i];
            return KILN_OK;
        }
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | extra_flags);
    if (fd < 0) {
        if (errno == ELOOP && (extra_flags & O_NOFOLLOW))
            return kiln_fail(L->e, KILN_ERR_IO, "'%s' became a symbolic link while loading", path);
        return kiln_fail(L->e, KILN_ERR_IO, "cannot open '%s': %s", path, strerror(errno));
    }
    struct stat st;
    if (fstat(fd, &st)) {
        int err = errno;
        close(fd);
        return kiln_fail(L->e, KILN_ERR_IO, "cannot stat '%s': %s", path, strerror(err));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return kiln_fail(L->e, KILN_ERR_IO, "'%s' is %s, not a regular file", path, file_kind(st.st_mode));
    }
    void *addr = NULL;
    if (st.st_size > 0) {
        addr = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (addr == MAP_FAILED) {
            close(fd);
            return kiln_fail(L->e, KILN_ERR_IO, "cannot map '%s': %s", path, strerror(errno));
        }
#ifdef MADV_NOHUGEPAGE
        /* Large page-cache folios would otherwise be mapped 2 MB at a time: touching one protobuf
         * header between two released weights brought 2 MB of them back (14 MB of a 48 MB model
         * stayed resident after every weight was handed back). An optimisation only. */
        madvise(addr, (size_t)st.st_size, MADV_NOHUGEPAGE);
#endif
    }
    close(fd);
    kiln_mapping *maps = realloc(m->maps, (size_t)(m->n_maps + 1) * sizeof *maps);
    if (!maps) {
        if (addr) munmap(addr, (size_t)st.st_size);
        return kiln_fail(L->e, KILN_ERR_NO_MEMORY, "out of memory");
    }
    m->maps = maps;
    kiln_mapping *mp = &maps[m->n_maps++];
    mp->addr = addr;
    mp->size = (size_t)st.st_size;
    mp->path = strdup(path);
    *out = mp;
    return KILN_OK;
}

/* Resolves external data `location` (already checked to be relative, without "..") against the
 * model's folder and maps it. The resolved path must lie inside the folder's resolved path: a
 * symbolic link in the folder may not lead out of it. */
static kiln_status map_external(loader *L, const char *tname, const char *location, kiln_mapping **out) {
    if (!L->real_dir[0] && !realpath(L->m->dir, L->real_dir)) {
        L->real_dir[0] = 0;
        return kiln_fail(L->e, KILN_ERR_IO, "tensor '%s': cannot resolve the model's folder '%s': %s", tname,
                         L->m->dir, strerror(errno));
    }
    char joined[PATH_MAX], real[PATH_MAX];
    if (snprintf(joined, sizeof joined, "%s/%s", L->real_dir, location) >= (int)sizeof joined)
        return kiln_fail(L->e, KILN_ERR_INVALID_MODEL, "tensor '%s': external data path '%s' is too long", tname,
                         location);
    if (!realpath(joined, real))
        return kiln_fail(L->e, KILN_ERR_IO, "tensor '%s': external data file '%s': %s", tname, location,
                         strerror(errno));
    size_t n = strlen(L->real_dir);
    int inside = !strncmp(real, L->real_dir, n) && (real[n] == '/' || (n == 1 && L->real_dir[0] == '/'));
    if (!inside)
        return kiln_fail(L->e, KILN_ERR_INVALID_MODEL,
                         "tensor '%s': external data location '%s' resolves to '%s', outside the model's "
                         "folder '%s' (a symbolic link may not lead out of it)", tname, location, real,
                         L->real_dir);
    kiln_status st = map_file(L, real, O_NOFOLLOW, out);
    if (st) kiln_err_prefix(L->e, "tensor '%s': external data '%s'", tname, location);
    return st;
}

/* After a misaligned tensor was copied, its pages in the mapping are not needed again: give them
 * back so that a model's weights are resident once, not twice (file-backed pages re-read on
 * demand should anything touch them). */
static void release_mapped_pages(const kiln_model *m, const void *src, size_t bytes) {
    long page = sysconf(_SC_PAGESIZE);
    if (page <= 0) return;
    uintptr_t lo = ((uintptr_t)src + (uintptr_t)page - 1) & ~((uintptr_t)page - 1);
    uintptr_t hi = ((uintptr_t)src + bytes) & ~((uintptr_t)page - 1);
    if (hi <= lo) return;
    for (int i = 0; i < m->n_maps; i++) {
        uintptr_t a = (uintptr_t)m->maps[i].addr;
        if (lo >= a && hi <= a + m->maps[i].size) {
            madvise((void *)lo, hi - lo, MADV_DONTNEED);
            return;
        }
    }
}

/* Copies a misaligned tensor out of the mapping a few MB at a time, releasing each piece's pages
 * as it goes: the whole tensor's pages were otherwise resident next to the copy until the end
 * (GPT-2's 154 MB embedding made the peak of loading 697 MB for 555 kept). Pieces end on page
 * boundaries of the source, so that no page is split between two of them. */
static void copy_and_release(const kiln_model *m, uint8_t *dst, const uint8_t *src, size_t bytes) {
    long page = sysconf(_SC_PAGESIZE);
    size_t step = (size_t)8 << 20, done = 0;
    if (page <= 0) page = 4096;
    while (done < bytes) {
        uintptr_t end = ((uintptr_t)src + done + step) & ~((uintptr_t)page - 1);
        size_t n = end - (uintptr_t)src - done;
        if (n > bytes - done) n = bytes - done;
        memcpy(dst + done, src + done, n);
        release_mapped_pages(m, src + done, n);
        done += n;
    }
}

/* ---------------------------------------------------------------- TensorProto */

typedef struct tensor_fields {
    int64_t dims[KILN_MAX_RANK];
    int rank;
    int dtype;
    const uint8_t *raw;
    size_t raw_len;
    int has_raw;
    int external;
    char *location;
    int64_t offset, length;
} tensor_fields;

static int typed_field_for(int dt) {
    switch (dt) {
    case KILN_DTYPE_FLOAT: case KILN_DTYPE_COMPLEX64: return 4;
    case KILN_DTYPE_INT64: return 7;
    case KILN_DTYPE_DOUBLE: case KILN_DTYPE_COMPLEX128: return 10;
    case KILN_DTYPE_UINT32: case KILN_DTYPE_UINT64: return 11;
    case KILN_DTYPE_STRING: return 6;
    default: return 5; /* int32_data carries the small integer, bool, float16 and float8 types */
    }
}

static kiln_status parse_tensor(loader *L, const uint8_t *data, size_t len, kiln_tensor *out,
                                char **name_out) {
    tensor_fields tf;
    memset(&tf, 0, sizeof tf);
    tf.offset = 0;
    tf.length = -1;
    kiln_pb r = kiln_pb_make(data, len);
    kiln_pb_field f;
    int rc;
    char *name = NULL;
    kiln_status st = KILN_OK;
    while ((rc = kiln_pb_next(&r, &f)) == 1) {
        switch (f.num) {
        case 1: { /* dims */
            int64_t tmp[KILN_MAX_RANK + 1];
            int n = kiln_pb_read_varints(&f, tmp, KILN_MAX_RANK + 1);
            if (n < 0 || tf.rank + n > KILN_MAX_RANK) {
                st = bad(L, "tensor has too many dimensions or a bad dims field");
                goto fail;
            }
            memcpy(tf.dims + tf.rank, tmp, (size_t)n * 8);
            tf.rank += n;
            break;
        }
        case 2: tf.dtype = (int)f.u; break;
        case 8:
            if (f.type != KILN_PB_LEN) { st = bad(L, "tensor name"); goto fail; }
            free(name);
            name = dup_bytes(f.data, f.len);
            break;
        case 9:
            if (f.type != KILN_PB_LEN) { st = bad(L, "tensor raw_data"); goto fail; }
            tf.raw = f.data;
            tf.raw_len = f.len;
            tf.has_raw = 1;
            break;
        case 14: tf.external = f.u == 1; break;
        case 13: { /* external_data: StringStringEntryProto {1 key, 2 value} */
            if (f.type != KILN_PB_LEN) { st = bad(L, "tensor external_data"); goto fail; }
            kiln_pb er = kiln_pb_make(f.data, f.len);
            kiln_pb_field ef;
            char *key = NULL, *val = NULL;
            while (kiln_pb_next(&er, &ef) == 1) {
                if (ef.type != KILN_PB_LEN) continue;
                if (ef.num == 1) { free(key); key = dup_bytes(ef.data, ef.len); }
                if (ef.num == 2) { free(val); val = dup_bytes(ef.data, ef.len); }
            }
            if (key && val) {
                if (!strcmp(key, "location")) { free(tf.location); tf.location = val; val = NULL; }
                else if (!strcmp(key, "offset")) tf.offset = strtoll(val, NULL, 10);
                else if (!strcmp(key, "length")) tf.length = strtoll(val, NULL, 10);
            }
            free(key);
            free(val);
            break;
        }
        default: break;
        }
    }
    if (rc < 0) { st = bad(L, "truncated or corrupt TensorProto"); goto fail; }
    if (!kiln_dtype_valid(tf.dtype)) {
        st = kiln_fail(L->e, KILN_ERR_INVALID_MODEL, "tensor '%s' has unknown data type %d",
                       name ? name : "", tf.dtype);
        goto fail;
    }
    int64_t numel = 1;
    for (int i = 0; i < tf.rank; i++) {
        if (tf.dims[i] < 0 || (tf.dims[i] && numel > (INT64_MAX >> 4) / tf.dims[i])) {
            st = kiln_fail(L->e, KILN_ERR_INVALID_MODEL, "tensor '%s' has an invalid shape",
                           name ? name : "");
            goto fail;
        }
        numel *= tf.dims[i];
    }
    memset(out, 0, sizeof *out);
    out->dtype = tf.dtype;
    out->rank = tf.rank;
    memcpy(out->dims, tf.dims, sizeof tf.dims);
    size_t bytes = kiln_dtype_bytes(tf.dtype, numel);
    size_t esize = kiln_dtype_size(tf.dtype);
    size_t align = esize > 8 ? 8 : (esize ? esize : 1);
    const char *tname = name ? name : "";

    if (tf.external) {
        if (tf.dtype == KILN_DTYPE_STRING) {
            st = kiln_fail(L->e, KILN_ERR_NOT_IMPLEMENTED, "tensor '%s': external string data", tname);
            goto fail;
        }
        if (!tf.location) {
            st = kiln_fail(L->e, KILN_ERR_INVALID_MODEL, "tensor '%s' is external but has no location", tname);
            goto fail;
        }
        if (!L->m->dir) {
            st = kiln_fail(L->e, KILN_ERR_INVALID_ARGUMENT,
                           "tensor '%s' keeps its data in external file '%s', which needs the model "
                           "to be opened from a path", tname, tf.location);
            goto fail;
        }
        if (!path_is_safe(tf.location)) {
            st = kiln_fail(L->e, KILN_ERR_INVALID_MODEL,
                           "tensor '%s': external data location '%s' must be a relative path inside "
                           "the model's folder", tname, tf.location);
            goto fail;
        }
        kiln_mapping *mp;
        if ((st = map_external(L, tname, tf.location, &mp))) goto fail;
        int64_t length = tf.length < 0 ? (int64_t)bytes : tf.length;
        if (tf.offset < 0 || length != (int64_t)bytes || (uint64_t)tf.offset > mp->size ||
            (uint64_t)length > mp->size - (uint64_t)tf.offset) {
            st = kiln_fail(L->e, KILN_ERR_INVALID_MODEL,
                           "tensor '%s': external data (offset %lld, length %lld) does not fit file "
                           "'%s' of %zu bytes or the tensor's %zu bytes", tname, (long long)tf.offset,
                           (long long)length, tf.location, mp->size, bytes);
            goto fail;
        }
        tf.raw = (const uint8_t *)mp->addr + tf.offset;
        tf.raw_len = bytes;
        tf.has_raw = 1;
    }

    if (tf.has_raw && tf.dtype != KILN_DTYPE_STRING) {
        if (tf.raw_len != bytes) {
            st = kiln_fail(L->e, KILN_ERR_INVALID_MODEL,
                           "tensor '%s' has %zu bytes of raw data, its shape needs %zu", tname,
                           tf.raw_len, bytes);
            goto fail;
        }
        L->m->init_bytes += bytes;
        if (((uintptr_t)tf.raw % align) == 0 && bytes > 0) {
            out->data = (void *)tf.raw; /* in place: the mapping outlives the model's tensors */
        } else {
            void *p = aligned_block(bytes);
            if (!p) { st = kiln_fail(L->e, KILN_ERR_NO_MEMORY, "out of memory"); goto fail; }
            copy_and_release(L->m, p, tf.raw, bytes);
            out->data = out->owner = p;
            if (bytes) L->m->copied_init_bytes += bytes;
            struct kiln_init_copy *c = realloc(L->m->copies, (size_t)(L->m->n_copies + 1) * sizeof *c);
            if (c) { /* without the note the copy is merely kept (core/weights.c) */
                L->m->copies = c;
                c[L->m->n_copies++] = (struct kiln_init_copy){p, tf.raw};
            }
        }
        *name_out = name;
        free(tf.location);
        return KILN_OK;
    }

    /* typed fields: count, then decode (they may come packed, unpacked, or split in chunks) */
    int fnum = typed_field_for(tf.dtype);
    int64_t count = 0;
    int elems_per_value = (tf.dtype == KILN_DTYPE_COMPLEX64 || tf.dtype == KILN_DTYPE_COMPLEX128) ? 2 : 1;
    r = kiln_pb_make(data, len);
    while (kiln_pb_next(&r, &f) == 1) {
        if ((int)f.num != fnum) continue;
        int c;
        if (fnum == 6) c = f.type == KILN_PB_LEN ? 1 : -1;
        else if (fnum == 4) c = kiln_pb_count_fixed(&f, 4);
        else if (fnum == 10) c = kiln_pb_count_fixed(&f, 8);
        else c = kiln_pb_count_varints(&f);
        if (c < 0) { st = bad(L, "tensor typed data field"); goto fail; }
        count += c;
    }
    /* sub-byte types: each int32_data entry holds one packed byte */
    int packed = tf.dtype == KILN_DTYPE_INT4 || tf.dtype == KILN_DTYPE_UINT4 || tf.dtype == KILN_DTYPE_FLOAT4E2M1 ||
                 tf.dtype == KILN_DTYPE_INT2 || tf.dtype == KILN_DTYPE_UINT2;
    int64_t want = packed ? (int64_t)bytes : numel * elems_per_value;
    if (count != want) {
        st = kiln_fail(L->e, KILN_ERR_INVALID_MODEL,
                       "tensor '%s' holds %lld values, its shape needs %lld", tname,
                       (long long)count, (long long)want);
        goto fail;
    }
    void *buf = aligned_block(bytes);
    if (!buf) { st = kiln_fail(L->e, KILN_ERR_NO_MEMORY, "out of memory"); goto fail; }
    out->data = out->owner = buf;
    L->m->init_bytes += bytes;
    int64_t k = 0;
    r = kiln_pb_make(data, len);
    int64_t *tmp = NULL;
    while (kiln_pb_next(&r, &f) == 1) {
        if ((int)f.num != fnum) continue;
        if (fnum == 6) { /* string_data: bytes, NULs included */
            char *s = kiln_str_new(f.data, f.len);
            if (!s) { st = kiln_fail(L->e, KILN_ERR_NO_MEMORY, "out of memory"); goto fail_buf; }
            ((char **)buf)[k++] = s;
        } else if (fnum == 4) {
            int c = kiln_pb_read_fixed32(&f, (uint32_t *)buf + k, (int)(want - k));
            k += c;
        } else if (fnum == 10) {
            int c = kiln_pb_read_fixed64(&f, (uint64_t *)buf + k, (int)(want - k));
            k += c;
        } else {
            int c = kiln_pb_count_varints(&f);
            tmp = realloc(tmp, (size_t)(c > 0 ? c : 1) * sizeof *tmp);
            if (!tmp) { st = kiln_fail(L->e, KILN_ERR_NO_MEMORY, "out of memory"); goto fail_buf; }
            kiln_pb_read_varints(&f, tmp, c);
            for (int i = 0; i < c; i++, k++) {
                int64_t v = tmp[i];
                switch (tf.dtype) {
                case KILN_DTYPE_INT64: case KILN_DTYPE_UINT64: ((int64_t *)buf)[k] = v; break;
                case KILN_DTYPE_INT32: case KILN_DTYPE_UINT32: ((int32_t *)buf)[k] = (int32_t)v; break;
                case KILN_DTYPE_INT16: case KILN_DTYPE_UINT16: case KILN_DTYPE_FLOAT16:
                case KILN_DTYPE_BFLOAT16: ((uint16_t *)buf)[k] = (uint16_t)v; break;
                case KILN_DTYPE_BOOL: ((uint8_t *)buf)[k] = v != 0; break;
                default: ((uint8_t *)buf)[k] = (uint8_t)v; break; /* int8, uint8, float8, 4-bit */
                }
            }
        }
    }
    free(tmp);
    *name_out = name;
    free(tf.location);
    return KILN_OK;
fail_buf:
    free(tmp);
    if (tf.dtype == KILN_DTYPE_STRING) {
        kiln_strs_free(buf, k);
    }
    free(buf);
    out->data = out->owner = NULL;
fail:
    free(name);
    free(tf.location);
    return st;
}

/* SparseTensorProto {1 values, 2 indices, 3 dims} -> dense tensor. */
static kiln_status parse_sparse_tensor(loader *L, const uint8_t *data, size_t len, kiln_tensor *out,
                                       char **name_out) {
    kiln_pb r = kiln_pb_make(data, len);
    kiln_pb_field f;
    kiln_tensor vals = {0}, idx = {0};
    int have_v = 0, have_i = 0, rank = 0;
    int64_t dims[KILN_MAX_RANK];
    char *vname = NULL, *iname = NULL;
    kiln_status st = KILN_OK;
    int rc;
    while ((rc = kiln_pb_next(&r, &f)) == 1) {
        if (f.num == 1 && f.type == KILN_PB_LEN && !have_v) {
            if ((st = parse_tensor(L, f.data, f.len, &vals, &vname))) goto done;
            have_v = 1;
        } else if (f.num == 2 && f.type == KILN_PB_LEN && !have_i) {
            if ((st = parse_tensor(L, f.data, f.len, &idx, &iname))) goto done;
            have_i = 1;
        } else if (f.num == 3) {
            int64_t tmp[KILN_MAX_RANK + 1];
            int n = kiln_pb_read_varints(&f, tmp, KILN_MAX_RANK + 1);
            if (n < 0 || rank + n > KILN_MAX_RANK) { st = bad(L, "sparse tensor dims"); goto done; }
            memcpy(dims + rank, tmp, (size_t)n * 8);
            rank += n;
        }
    }
    if (rc < 0 || !have_v || !have_i || vals.rank != 1 || idx.dtype != KILN_DTYPE_INT64 ||
        vals.dtype == KILN_DTYPE_STRING) {
        st = bad(L, "sparse tensor needs 1-D values and int64 indices");
        goto done;
    }
    memset(out, 0, sizeof *out);
    out->dtype = vals.dtype;
    out->rank = rank;
    memcpy(out->dims, dims, (size_t)rank * 8);
    int64_t numel = kiln_numel(out), nnz = vals.dims[0];
    if (numel < 0) { st = bad(L, "sparse tensor dims"); goto done; }
    int linear = idx.rank == 1;
    if (!(linear && idx.dims[0] == nnz) && !(idx.rank == 2 && idx.dims[0] == nnz && idx.dims[1] == rank)) {
        st = bad(L, "sparse tensor indices shape");
        goto done;
    }
    if ((st = kiln_tensor_alloc(out, L->e))) goto done;
    size_t es = kiln_dtype_size(vals.dtype);
    const int64_t *ix = idx.data;
    for (int64_t k = 0; k < nnz; k++) {
        int64_t off = 0;
        if (linear) {
            off = ix[k];
        } else {
            for (int d = 0; d < rank; d++) {
                int64_t v = ix[k * rank + d];
                if (v < 0 || v >= dims[d]) { off = -1; break; }
                off = off * dims[d] + v;
            }
        }
        if (off < 0 || off >= numel) {
            kiln_tensor_release(out);
            st = bad(L, "sparse tensor index out of range");
            goto done;
        }
        memcpy((char *)out->data + off * es, (const char *)vals.data + k * es, es);
    }
    *name_out = vname;
    vname = NULL;
done:
    free(vname);
    free(iname);
    kiln_tensor_release(&vals);
    kiln_tensor_release(&idx);
    return st;
}

/* ---------------------------------------------------------------- TypeProto / ValueInfoProto */

/* Remembers that symbol `sym` carries a dimension denotation (free dimension overrides may name
 * dimensions by denotation, e.g. DATA_BATCH). */
static kiln_status add_denotation(loader *L, const uint8_t *p, size_t n, int sym) {
    kiln_model *m = L->m;
    for (int i = 0; i < m->n_denots; i++)
        if (m->denots[i].sym == sym && strlen(m->denots[i].name) == n && !memcmp(m->denots[i].name, p, n))
            return KILN_OK;
    struct kiln_denotation *d = realloc(m->denots, (size_t)(m->n_denots + 1) * sizeof *d);
    if (!d) return kiln_fail(L->e, KILN_ERR_NO_MEMORY, "out of memory");
    m->denots = d;
    d[m->n_denots].name = dup_bytes(p, n);
    if (!d[m->n_denots].name) return kiln_fail(L->e, KILN_ERR_NO_MEMORY, "out of memory");
    d[m->n_denots++].sym = sym;
    return KILN_OK;
}

static kiln_status parse_shape(loader *L, const uint8_t *data, size_t len, kiln_type *t) {
    kiln_pb r = kiln_pb_make(data, len);
    kiln_pb_field f;
    int rc;
    t->rank = 0;
    while ((rc = kiln_pb_next(&r, &f)) == 1) {
        if (f.num != 1 || f.type != KILN_PB_LEN) continue;
        if (t->rank >= KILN_MAX_RANK) return bad(L, "value has too many dimensions");
        int64_t d = KILN_DIM_UNKNOWN;
        const uint8_t *denot = NULL;
        size_t denot_len = 0;
        kiln_pb dr = kiln_pb_make(f.data, f.len);
        kiln_pb_field df;
        while ((rc = kiln_pb_next(&dr, &df)) == 1) {
            if (df.num == 3 && df.type == KILN_PB_LEN && df.len) {
                denot = df.data;
                denot_len = df.len;
            }
            if (df.num == 1 && df.type == KILN_PB_VARINT) {
                d = (int64_t)df.u;
                if (d < 0) d = KILN_DIM_UNKNOWN;
            } else if (df.num == 2 && df.type == KILN_PB_LEN && df.len) {
                char *s = dup_bytes(df.data, df.len);
                if (!s) return kiln_fail(L->e, KILN_ERR_NO_MEMORY, "out of memory");
                int id = kiln_model_symbol(L->m, s);
                free(s);
                if (id < 0) return kiln_fail(L->e, KILN_ERR_NO_MEMORY, "out of memory");
                d = KILN_DIM_SYM(id);
            }
        }
        if (rc < 0) return bad(L, "tensor shape dimension");
        if (denot && KILN_DIM_IS_SYM(d)) KILN_TRY(add_denotation(L, denot, denot_len, KILN_DIM_SYM_ID(d)));
        t->dims[t->rank++] = d;
    }
    return rc < 0 ? bad(L, "tensor shape") : KILN_OK;
}

static kiln_status parse_type(loader *L, const uint8_t *data, size_t len, kiln_type *t, int depth) {
    if (depth > 8) return bad(L, "type nesting too deep");
    kiln_pb r = kiln_pb_make(data, len);
    kiln_pb_field f;
    int rc;
    while ((rc = kiln_pb_next(&r, &f)) == 1) {
        if (f.type != KILN_PB_LEN) continue;
        if (f.num == 1 || f.num == 8) { /* tensor_type, sparse_tensor_type */
            kiln_pb tr = kiln_pb_make(f.data, f.len);
            kiln_pb_field tfd;
            int have_shape = 0;
            while ((rc = kiln_pb_next(&tr, &tfd)) == 1) {
                if (tfd.num == 1 && tfd.type == KILN_PB_VARINT) t->dtype = (int)tfd.u;
                else if (tfd.num == 2 && tfd.type == KILN_PB_LEN) {
                    KILN_TRY(parse_shape(L, tfd.data, tfd.len, t));
                    have_shape = 1;
                }
            }
            if (rc < 0) return bad(L, "tensor type");
            if (!have_shape) t->rank = -1;
            if (t->kind != KILN_KIND_SEQUENCE) t->kind = KILN_KIND_TENSOR;
        } else if (f.num == 4) { /* sequence_type { elem_type } */
            kiln_pb sr = kiln_pb_make(f.data, f.len);
            kiln_pb_field sf;
            t->kind = KILN_KIND_SEQUENCE;
            while ((rc = kiln_pb_next(&sr, &sf)) == 1)
                if (sf.num == 1 && sf.type == KILN_PB_LEN) {
                    kiln_type inner = *t;
                    KILN_TRY(parse_type(L, sf.data, sf.len, &inner, depth + 1));
                    t->dtype = inner.dtype;
                    t->key_dtype = inner.key_dtype;
                    t->rank = inner.rank;
                    memcpy(t->dims, inner.dims, sizeof t->dims);
                }
            t->kind = t->key_dtype ? KILN_KIND_MAP_SEQUENCE : KILN_KIND_SEQUENCE;
        } else if (f.num == 5) { /* map_type { 1 key_type, 2 value_type } */
            kiln_pb mr = kiln_pb_make(f.data, f.len);
            kiln_pb_field mf;
            int in_seq = t->kind == KILN_KIND_SEQUENCE;
            while ((rc = kiln_pb_next(&mr, &mf)) == 1) {
                if (mf.num == 1 && mf.type == KILN_PB_VARINT) t->key_dtype = (int)mf.u;
                else if (mf.num == 2 && mf.type == KILN_PB_LEN) {
                    kiln_type inner;
                    memset(&inner, 0, sizeof inner);
                    inner.rank = -1;
                    KILN_TRY(parse_type(L, mf.data, mf.len, &inner, depth + 1));
                    if (inner.kind != KILN_KIND_TENSOR)
                        return kiln_fail(L->e, KILN_ERR_NOT_IMPLEMENTED, "maps of %s values",
                                         kiln_kind_is_map(inner.kind) ? "map" : "sequence");
                    t->dtype = inner.dtype;
                }
            }
            if (rc < 0) return bad(L, "map type");
            t->kind = in_seq ? KILN_KIND_MAP_SEQUENCE : KILN_KIND_MAP;
            t->rank = -1;
        } else if (f.num == 9) { /* optional_type { elem_type } */
            kiln_pb orr = kiln_pb_make(f.data, f.len);
            kiln_pb_field of;
            while ((rc = kiln_pb_next(&orr, &of)) == 1)
                if (of.num == 1 && of.type == KILN_PB_LEN) KILN_TRY(parse_type(L, of.data, of.len, t, depth + 1));
            t->optional = 1;
        }
    }
    return rc < 0 ? bad(L, "type") : KILN_OK;
}

/* ValueInfoProto {1 name, 2 type}: returns the name and fills t. */
static kiln_status parse_value_info(loader *L, const uint8_t *data, size_t len, char **name,
                                    kiln_type *t, int *has_type) {
    kiln_pb r = kiln_pb_make(data, len);
    kiln_pb_field f;
    int rc;
    *name = NULL;
    *has_type = 0;
    memset(t, 0, sizeof *t);
    t->rank = -1;
    while ((rc = kiln_pb_next(&r, &f)) == 1) {
        if (f.type != KILN_PB_LEN) continue;
        if (f.num == 1) {
            free(*name);
            *name = dup_bytes(f.data, f.len);
        } else if (f.num == 2) {
            kiln_status st = parse_type(L, f.data, f.len, t, 0);
            if (st) { free(*name); *name = NULL; return st; }
            *has_type = 1;
        }
    }
    if (rc < 0 || !*name) {
        free(*name);
        *name = NULL;
        return bad(L, "value info without a name");
    }
    return KILN_OK;
}

/* ---------------------------------------------------------------- graphs */

static kiln_status parse_graph(loader *L, const uint8_t *data, size_t len, kiln_graph *parent,
                               kiln_graph **out);

static int resolve_name(kiln_graph *g, const char *name) {
    int i = kiln_graph_find_value(g, name);
    if (i >= 0 || !g->parent) return i;
    int p = resolve_name(g->parent, name);
    if (p < 0) return -1;
    i = kiln_graph_add_value(g, name);
    if (i < 0) return -1;
    g->values[i].outer = p;
    g->values[i].type = g->parent->values[p].type;
    g->values[i].has_type = g->parent->values[p].has_type;
    return i;
}

static kiln_status parse_attr(loader *L, const uint8_t *data, size_t len, kiln_graph *g, kiln_attr *a) {
    memset(a, 0, sizeof *a);
    kiln_pb r = kiln_pb_make(data, len);
    kiln_pb_field f;
    int rc;
    /* count list lengths first so each list is one allocation */
    int nf = 0, ni = 0, ns = 0, nt = 0, ng = 0;
    while ((rc = kiln_pb_next(&r, &f)) == 1) {
        int c = 0;
        if (f.num == 7) { c = kiln_pb_count_fixed(&f, 4); if (c < 0) return bad(L, "attribute floats"); nf += c; }
        if (f.num == 8) { c = kiln_pb_count_varints(&f); if (c < 0) return bad(L, "attribute ints"); ni += c; }
        if (f.num == 9) ns++;
        if (f.num == 10 || f.num == 23) nt++;
        if (f.num == 11) ng++;
    }
    if (rc < 0) return bad(L, "truncated attribute");
    if (nf) a->floats = calloc((size_t)nf, sizeof(float));
    if (ni) a->ints = calloc((size_t)ni, sizeof(int64_t));
    if (ns) a->strings = calloc((size_t)ns, sizeof(char *));
    if (nt) a->tensors = calloc((size_t)nt, sizeof(kiln_tensor));
    if (ng) a->graphs = calloc((size_t)ng, sizeof(kiln_graph *));
    if ((nf && !a->floats) || (ni && !a->ints) || (ns && !a->strings) || (nt && !a->tensors) || (ng && !a->graphs))
        return kiln_fail(L->e, KILN_ERR_NO_MEMORY, "out of memory");
    int kf = 0, ki = 0, ks = 0, kt = 0, kg = 0;
    r = kiln_pb_make(data, len);
    char *tname = NULL;
    while (kiln_pb_next(&r, &f) == 1) {
        kiln_status st = KILN_OK;
        switch (f.num) {
        case 1: if (f.type == KILN_PB_LEN) { free(a->name); a->name = dup_bytes(f.data, f.len); } break;
        case 20: a->type = (int)f.u; break;
        case 2: { uint32_t b = (uint32_t)f.u; memcpy(&a->f, &b, 4); break; }
        case 3: a->i = (int64_t)f.u; break;
        case 4:
            if (f.type == KILN_PB_LEN) { free(a->s); a->s = dup_bytes(f.data, f.len); a->s_len = f.len; }
            break;
        case 5: case 22:
            if (f.type != KILN_PB_LEN || a->t) break;
            a->t = calloc(1, sizeof *a->t);
            if (!a->t) return kiln_fail(L->e, KILN_ERR_NO_MEMORY, "out of memory");
            st = f.num == 5 ? parse_tensor(L, f.data, f.len, a->t, &tname)
                            : parse_sparse_tensor(L, f.data, f.len, a->t, &tname);
            free(tname);
            tname = NULL;
            break;
        case 6:
            if (f.type == KILN_PB_LEN && !a->g) st = parse_graph(L, f.data, f.len, g, &a->g);
            break;
        case 7: kf += kiln_pb_read_fixed32(&f, (uint32_t *)a->floats + kf, nf - kf); break;
        case 8: ki += kiln_pb_read_varints(&f, a->ints + ki, ni - ki); break;
        case 9:
            if (f.type == KILN_PB_LEN) {
                if (!(a->strings[ks] = kiln_str_new(f.data, f.len))) /* bytes, NULs included */
                    return kiln_fail(L->e, KILN_ERR_NO_MEMORY, "out of memory");
                a->n_strings = ++ks;
            }
            break;
        case 10: case 23:
            if (f.type == KILN_PB_LEN) {
                st = f.num == 10 ? parse_tensor(L, f.data, f.len, &a->tensors[kt], &tname)
                                 : parse_sparse_tensor(L, f.data, f.len, &a->tensors[kt], &tname);
                if (!st) a->n_tensors = ++kt;
                free(tname);
                tname = NULL;
            }
            break;
        case 11:
            if (f.type == KILN_PB_LEN) {
                st = parse_graph(L, f.data, f.len, g, &a->graphs[kg]);
                if (!st) a->n_graphs = ++kg;
            }
            break;
        case 14: { /* TypeProto: keep the tensor elem type (CastLike-style uses) */
            kiln_type t = {0};
            if (f.type == KILN_PB_LEN && !parse_type(L, f.data, f.len, &t, 0)) a->tp_elem_type = t.dtype;
            break;
        }
        default: break;
        }
        if (st) return st;
    }
    if (!a->name) return bad(L, "attribute without a name");
    if (!a->type) { /* IR < 2 style: infer the type from which field was set */
        if (a->g) a->type = KILN_ATTR_GRAPH;
        else if (a->t) a->type = KILN_ATTR_TENSOR;
        else if (a->s) a->type = KILN_ATTR_STRING;
        else if (nf) a->type = KILN_ATTR_FLOATS;
        else if (ni) a->type = KILN_ATTR_INTS;
        else if (ns) a->type = KILN_ATTR_STRINGS;
        else a->type = KILN_ATTR_INT;
    }
    switch (a->type) {
    case KILN_ATTR_FLOATS: a->n = kf; break;
    case KILN_ATTR_INTS: a->n = ki; break;
    case KILN_ATTR_STRINGS: a->n = ks; break;
    case KILN_ATTR_TENSORS: case KILN_ATTR_SPARSE_TENSORS: a->n = kt; break;
    case KILN_ATTR_GRAPHS: a->n = kg; break;
    case KILN_ATTR_SPARSE_TENSOR: a->type = KILN_ATTR_TENSOR; break;
    default: break;
    }
    if (a->type == KILN_ATTR_GRAPH && !a->g) return bad(L, "graph attribute without a graph");
    if (a->type == KILN_ATTR_TENSOR && !a->t) return bad(L, "tensor attribute without a tensor");
    if (a->type == KILN_ATTR_STRING && !a->s) {
        a->s = strdup("");
        if (!a->s) return kiln_fail(L->e, KILN_ERR_NO_MEMORY, "out of memory");
    }
    return KILN_OK;
}

/* A node's string lists (inputs/outputs) gathered from its proto. */
typedef struct name_list {
    int n;
    char **names;
} name_list;

static void name_list_free(name_list *l) {
    for (int i = 0; i < l->n; i++) free(l->names[i]);
    free(l->names);
    l->n = 0;
    l->names = NULL;
}

static kiln_status collect_names(loader *L, const uint8_t *data, size_t len, uint32_t field, name_list *l) {
    kiln_pb r = kiln_pb_make(data, len);
    kiln_pb_field f;
    int rc;
    while ((rc = kiln_pb_next(&r, &f)) == 1) {
        if (f.num != field || f.type != KILN_PB_LEN) continue;
        char **nn = realloc(l->names, (size_t)(l->n + 1) * sizeof *nn);
        if (!nn) return kiln_fail(L->e, KILN_ERR_NO_MEMORY, "out of memory");
        l->names = nn;
        if (!(nn[l->n] = dup_bytes(f.data, f.len))) return kiln_fail(L->e, KILN_ERR_NO_MEMORY, "out of memory");
        l->n++;
    }
    return rc < 0 ? bad(L, "truncated node") : KILN_OK;
}

static kiln_status add_node_shell(loader *L, kiln_graph *g) {
    if (g->n_nodes == g->cap_nodes) {
        int cap = g->cap_nodes ? g->cap_nodes * 2 : 32;
        kiln_node *n = realloc(g->nodes, (size_t)cap * sizeof *n);
        if (!n) return kiln_fail(L->e, KILN_ERR_NO_MEMORY, "out of memory");
        g->nodes = n;
        g->cap_nodes = cap;
    }
    memset(&g->nodes[g->n_nodes++], 0, sizeof(kiln_node));
    return KILN_OK;
}

/* Collects, into *out, the outer-scope values of `g`'s parent that subgraph sub (recursively)
 * reads: the node owning sub must count them as inputs for ordering and lifetimes. */
static kiln_status gather_implicit(loader *L, kiln_graph *sub, kiln_node *n) {
    for (int i = 0; i < sub->n_values; i++) {
        int p = sub->values[i].outer;
        if (p < 0) continue;
        int dup = 0;
        for (int k = 0; k < n->n_implicit; k++) dup |= n->implicit[k] == p;
        if (dup) continue;
        int *im = realloc(n->implicit, (size_t)(n->n_implicit + 1) * sizeof *im);
        if (!im) return kiln_fail(L->e, KILN_ERR_NO_MEMORY, "out of memory");
        n->implicit = im;
        im[n->n_implicit++] = p;
    }
    return KILN_OK;
}

static kiln_status parse_node(loader *L, kiln_graph *g, int idx, const uint8_t *data, size_t len) {
    kiln_node *n = &g->nodes[idx];
    kiln_pb r = kiln_pb_make(data, len);
    kiln_pb_field f;
    int rc, nattr = 0;
    while ((rc = kiln_pb_next(&r, &f)) == 1) {
        if (f.type != KILN_PB_LEN) continue;
        if (f.num == 3) { free(n->name); n->name = dup_bytes(f.data, f.len); }
        else if (f.num == 4) { free(n->op_type); n->op_type = dup_bytes(f.data, f.len); }
        else if (f.num == 7) { free(n->domain); n->domain = dup_bytes(f.data, f.len); }
        else if (f.num == 5) nattr++;
    }
    if (rc < 0) return bad(L, "truncated node");
    if (!n->op_type || !n->op_type[0]) return bad(L, "node without op_type");
    if (!n->domain) n->domain = strdup("");
    if (!strcmp(n->domain, "ai.onnx")) n->domain[0] = 0;
    if (!n->name || !n->name[0]) {
        char buf[160];
        snprintf(buf, sizeof buf, "%s_%d", n->op_type, idx);
        free(n->name);
        n->name = strdup(buf);
    }
    if (!n->name || !n->domain) return kiln_fail(L->e, KILN_ERR_NO_MEMORY, "out of memory");
    int64_t ver = kiln_model_opset(L->m, n->domain);
    /* com.microsoft has one version; ONNX Runtime takes nodes of it without the import (its
     * transformers optimizer writes such models), so kiln does too */
    if (ver < 0 && !strcmp(n->domain, "com.microsoft")) ver = 1;
    n->opset = ver < 0 ? -1 : (int)(ver > INT32_MAX ? INT32_MAX : ver);
    if (nattr) {
        n->attrs = calloc((size_t)nattr, sizeof *n->attrs);
        if (!n->attrs) return kiln_fail(L->e, KILN_ERR_NO_MEMORY, "out of memory");
        r = kiln_pb_make(data, len);
        while (kiln_pb_next(&r, &f) == 1) {
            if (f.num != 5 || f.type != KILN_PB_LEN) continue;
            kiln_status st = parse_attr(L, f.data, f.len, g, &n->attrs[n->n_attrs]);
            n->n_attrs++;
            if (st) {
                kiln_err_prefix(L->e, "node '%s' (%s)", n->name, n->op_type);
                return st;
            }
        }
    }
    /* inputs: resolved now that every output of this graph (and enclosing ones) has a value */
    name_list ins = {0};
    kiln_status st = collect_names(L, data, len, 1, &ins);
    if (st) { name_list_free(&ins); return st; }
    n = &g->nodes[idx];
    n->n_in = ins.n;
    n->in = calloc((size_t)(ins.n ? ins.n : 1), sizeof(int));
    if (!n->in) { name_list_free(&ins); return kiln_fail(L->e, KILN_ERR_NO_MEMORY, "out of memory"); }
    for (int i = 0; i < ins.n; i++) {
        if (!ins.names[i][0]) { n->in[i] = -1; continue; }
        int v = resolve_name(g, ins.names[i]);
        if (v < 0) {
            st = kiln_fail(L->e, KILN_ERR_INVALID_MODEL,
                           "node '%s' (%s): input '%s' is not a graph input, an initializer or the "
                           "output of any node", n->name, n->op_type, ins.names[i]);
            name_list_free(&ins);
            return st;
        }
        n->in[i] = v;
    }
    name_list_free(&ins);
    for (int k = 0; k < n->n_attrs; k++) {
        kiln_attr *a = &n->attrs[k];
        if (a->g) KILN_TRY(gather_implicit(L, a->g, n));
        for (int j = 0; a->graphs && j < a->n_graphs; j++) KILN_TRY(gather_implicit(L, a->graphs[j], n));
    }
    return KILN_OK;
}

/* The k-th value node nd reads: its inputs, then the outer values its subgraphs read. */
static int node_read(const kiln_node *nd, int k) {
    return k < nd->n_in ? nd->in[k] : nd->implicit[k - nd->n_in];
}

/* Kahn's algorithm; the ONNX spec asks for sorted nodes, but exporters do not always comply.
 * Each value's readers are listed once up front (CSR: first[v]..first[v+1] in readers) so that
 * the sort is linear in the graph's size. */
static kiln_status topo_sort(loader *L, kiln_graph *g) {
    int n = g->n_nodes, nv = g->n_values;
    if (n <= 0) return KILN_OK;
    size_t n_reads = 0;
    for (int i = 0; i < n; i++) n_reads += (size_t)g->nodes[i].n_in + (size_t)g->nodes[i].n_implicit;
    int *indeg = calloc((size_t)n, sizeof(int)), *order = malloc((size_t)n * sizeof(int));
    int *queue = malloc((size_t)n * sizeof(int));
    int *first = calloc((size_t)nv + 1, sizeof(int));
    int *readers = malloc((n_reads ? n_reads : 1) * sizeof(int));
    if (!indeg || !order || !queue || !first || !readers || n_reads > INT_MAX) {
        free(indeg); free(order); free(queue); free(first); free(readers);
        return kiln_fail(L->e, KILN_ERR_NO_MEMORY, "out of memory");
    }
    for (int i = 0; i < n; i++) {
        kiln_node *nd = &g->nodes[i];
        for (int k = 0; k < nd->n_in + nd->n_implicit; k++) {
            int v = node_read(nd, k);
            if (v < 0) continue;
            first[v + 1]++;
            if (g->values[v].producer >= 0) indeg[i]++;
        }
    }
    for (int v = 0; v < nv; v++) first[v + 1] += first[v];
    int *cursor = malloc((size_t)(nv ? nv : 1) * sizeof(int)); /* where value v's next reader goes */
    if (!cursor) {
        free(indeg); free(order); free(queue); free(first); free(readers);
        return kiln_fail(L->e, KILN_ERR_NO_MEMORY, "out of memory");
    }
    memcpy(cursor, first, (size_t)nv * sizeof(int));
    for (int i = 0; i < n; i++) {
        kiln_node *nd = &g->nodes[i];
        for (int k = 0; k < nd->n_in + nd->n_implicit; k++) {
            int v = node_read(nd, k);
            if (v >= 0) readers[cursor[v]++] = i;
        }
    }
    free(cursor);
    int head = 0, tail = 0, done = 0;
    for (int i = 0; i < n; i++)
        if (!indeg[i]) queue[tail++] = i;
    while (head < tail) {
        int i = queue[head++];
        order[done++] = i;
        kiln_node *nd = &g->nodes[i];
        for (int o = 0; o < nd->n_out; o++) {
            int v = nd->out[o];
            if (v < 0) continue;
            for (int r = first[v]; r < first[v + 1]; r++)
                if (--indeg[readers[r]] == 0) queue[tail++] = readers[r];
        }
    }
    free(first);
    free(readers);
    kiln_status st = KILN_OK;
    if (done < n) {
        int bad_node = 0;
        for (int i = 0; i < n; i++)
            if (indeg[i]) { bad_node = i; break; }
        st = kiln_fail(L->e, KILN_ERR_INVALID_MODEL, "the graph has a cycle through node '%s' (%s)",
                       g->nodes[bad_node].name, g->nodes[bad_node].op_type);
    } else {
        kiln_node *sorted = malloc((size_t)n * sizeof *sorted);
        if (!sorted) {
            st = kiln_fail(L->e, KILN_ERR_NO_MEMORY, "out of memory");
        } else {
            for (int i = 0; i < n; i++) sorted[i] = g->nodes[order[i]];
            free(g->nodes);
            g->nodes = sorted;
            g->cap_nodes = n;
            for (int i = 0; i < n; i++)
                for (int o = 0; o < sorted[i].n_out; o++)
                    if (sorted[i].out[o] >= 0) g->values[sorted[i].out[o]].producer = i;
        }
    }
    free(indeg); free(order); free(queue);
    return st;
}

/* ---------------------------------------------------------------- caller-supplied initializers */

/* The name and data_type of a TensorProto, without reading its data. */
static void peek_tensor(const uint8_t *data, size_t len, const uint8_t **name, size_t *name_len, int *dtype) {
    kiln_pb r = kiln_pb_make(data, len);
    kiln_pb_field f;
    *name = NULL;
    *name_len = 0;
    *dtype = 0;
    while (kiln_pb_next(&r, &f) == 1) {
        if (f.num == 8 && f.type == KILN_PB_LEN) { *name = f.data; *name_len = f.len; }
        if (f.num == 2 && f.type == KILN_PB_VARINT) *dtype = (int)f.u;
    }
}

/* Which override, if any, replaces the initializer in these TensorProto bytes (-1: none). */
static int override_index(loader *L, const uint8_t *data, size_t len) {
    if (!L->ov || !L->ov->n) return -1;
    const uint8_t *nm;
    size_t nl;
    int dt;
    peek_tensor(data, len, &nm, &nl, &dt);
    for (size_t i = 0; nm && i < L->ov->n; i++) {
        const char *want = L->ov->names[i];
        if (want && strlen(want) == nl && !memcmp(want, nm, nl)) return (int)i;
    }
    return -1;
}

static kiln_status override_tensor(loader *L, int i, const uint8_t *data, size_t len, kiln_tensor *out,
                                   char **name_out) {
    const kiln_tensor_desc *d = &L->ov->tensors[i];
    const char *name = L->ov->names[i];
    const uint8_t *nm;
    size_t nl;
    int dt;
    peek_tensor(data, len, &nm, &nl, &dt);
    if ((d->dtype == KILN_DTYPE_SIZED_STRING ? KILN_DTYPE_STRING : d->dtype) != dt)
        return kiln_fail(L->e, KILN_ERR_INVALID_ARGUMENT,
                         "initializer '%s' given in the options has element type %s, the model's has %s", name,
                         kiln_dtype_name(d->dtype), kiln_dtype_name((kiln_dtype)dt));
    if (d->rank < 0 || d->rank > KILN_MAX_RANK || (d->rank && !d->dims) || d->memory != KILN_MEMORY_HOST)
        return kiln_fail(L->e, KILN_ERR_INVALID_ARGUMENT,
                         "initializer '%s' given in the options: a host tensor of rank 0 to %d is needed", name,
                         KILN_MAX_RANK);
    kiln_tensor view;
    memset(&view, 0, sizeof view);
    view.dtype = d->dtype;
    view.rank = d->rank;
    for (int k = 0; k < d->rank; k++) {
        if (d->dims[k] < 0)
            return kiln_fail(L->e, KILN_ERR_INVALID_ARGUMENT,
                             "initializer '%s' given in the options has a negative dimension", name);
        view.dims[k] = d->dims[k];
    }
    if (kiln_checked_numel(view.rank, view.dims) == KILN_NUMEL_TOO_LARGE)
        return kiln_fail(L->e, KILN_ERR_INVALID_ARGUMENT, "initializer '%s' given in the options is too large", name);
    view.data = (void *)d->data;
    if (!view.data && kiln_numel(&view) > 0)
        return kiln_fail(L->e, KILN_ERR_INVALID_ARGUMENT, "initializer '%s' given in the options has no data", name);
    KILN_TRY(kiln_tensor_import(out, &view, name, L->e));
    *name_out = strdup(name);
    if (!*name_out) {
        kiln_tensor_release(out);
        return kiln_fail(L->e, KILN_ERR_NO_MEMORY, "out of memory");
    }
    L->ov_used[i] = 1;
    return KILN_OK;
}

static kiln_status parse_graph(loader *L, const uint8_t *data, size_t len, kiln_graph *parent,
                               kiln_graph **out) {
    if (L->depth >= MAX_GRAPH_DEPTH) return bad(L, "subgraphs nested too deeply");
    kiln_graph *g = calloc(1, sizeof *g);
    if (!g) return kiln_fail(L->e, KILN_ERR_NO_MEMORY, "out of memory");
    g->parent = parent;
    g->model = L->m;
    L->depth++;
    kiln_status st = KILN_OK;
    kiln_pb r;
    kiln_pb_field f;
    int rc;
    char *name = NULL;
    kiln_type type;
    int has_type;

    /* 1. initializers (dense and sparse) */
    r = kiln_pb_make(data, len);
    while ((rc = kiln_pb_next(&r, &f)) == 1) {
        if (f.type != KILN_PB_LEN) continue;
        if (f.num == 2) { free(g->name); g->name = dup_bytes(f.data, f.len); }
        if (f.num == 10 && !parent) { free(L->m->graph_doc); L->m->graph_doc = dup_bytes(f.data, f.len); }
        if (f.num != 5 && f.num != 15) continue;
        kiln_tensor t;
        int ov = !parent && f.num == 5 ? override_index(L, f.data, f.len) : -1;
        st = ov >= 0 ? override_tensor(L, ov, f.data, f.len, &t, &name)
             : f.num == 5 ? parse_tensor(L, f.data, f.len, &t, &name)
                          : parse_sparse_tensor(L, f.data, f.len, &t, &name);
        if (st) goto fail;
        if (!name || !name[0]) {
            kiln_tensor_release(&t);
            free(name);
            name = NULL;
            st = bad(L, "initializer without a name");
            goto fail;
        }
        int v = kiln_graph_find_value(g, name);
        if (v >= 0) {
            kiln_tensor_release(&t);
            st = kiln_fail(L->e, KILN_ERR_INVALID_MODEL, "initializer '%s' is defined twice", name);
            goto fail;
        }
        v = kiln_graph_add_value(g, name);
        if (v < 0) { kiln_tensor_release(&t); st = kiln_fail(L->e, KILN_ERR_NO_MEMORY, "out of memory"); goto fail; }
        kiln_graph_value *gv = &g->values[v];
        gv->is_const = 1;
        gv->konst.kind = KILN_KIND_TENSOR;
        gv->konst.t = t;
        gv->type.kind = KILN_KIND_TENSOR;
        gv->type.dtype = t.dtype;
        gv->type.rank = t.rank;
        memcpy(gv->type.dims, t.dims, sizeof t.dims);
        gv->has_type = 1;
        free(name);
        name = NULL;
    }
    if (rc < 0) { st = bad(L, "truncated graph"); goto fail; }

    /* 2. inputs (an input that is also an initializer is a constant with a default) */
    r = kiln_pb_make(data, len);
    while (kiln_pb_next(&r, &f) == 1) {
        if (f.num != 11 || f.type != KILN_PB_LEN) continue;
        if ((st = parse_value_info(L, f.data, f.len, &name, &type, &has_type))) goto fail;
        int v = kiln_graph_find_value(g, name);
        if (v >= 0 && !g->values[v].is_const) {
            st = kiln_fail(L->e, KILN_ERR_INVALID_MODEL, "graph input '%s' is declared twice", name);
            goto fail;
        }
        if (v < 0) {
            v = kiln_graph_add_value(g, name);
            if (v < 0) { st = kiln_fail(L->e, KILN_ERR_NO_MEMORY, "out of memory"); goto fail; }
            g->values[v].is_input = 1;
            g->values[v].type = type;
            g->values[v].has_type = has_type;
            int *ins = realloc(g->inputs, (size_t)(g->n_inputs + 1) * sizeof(int));
            if (!ins) { st = kiln_fail(L->e, KILN_ERR_NO_MEMORY, "out of memory"); goto fail; }
            g->inputs = ins;
            ins[g->n_inputs++] = v;
        }
        free(name);
        name = NULL;
    }

    /* 3. node shells and their outputs, so that inputs can be resolved in any order */
    r = kiln_pb_make(data, len);
    while (kiln_pb_next(&r, &f) == 1) {
        if (f.num != 1 || f.type != KILN_PB_LEN) continue;
        if ((st = add_node_shell(L, g))) goto fail;
        kiln_node *n = &g->nodes[g->n_nodes - 1];
        name_list outs = {0};
        if ((st = collect_names(L, f.data, f.len, 2, &outs))) { name_list_free(&outs); goto fail; }
        n->n_out = outs.n;
        n->out = calloc((size_t)(outs.n ? outs.n : 1), sizeof(int));
        if (!n->out) { name_list_free(&outs); st = kiln_fail(L->e, KILN_ERR_NO_MEMORY, "out of memory"); goto fail; }
        for (int i = 0; i < outs.n; i++) {
            if (!outs.names[i][0]) { n->out[i] = -1; continue; }
            int v = kiln_graph_find_value(g, outs.names[i]);
            if (v >= 0) {
                st = kiln_fail(L->e, KILN_ERR_INVALID_MODEL,
                               "value '%s' is produced twice (by a node and by %s)", outs.names[i],
                               g->values[v].producer >= 0 ? "another node" : "an input or initializer");
                name_list_free(&outs);
                goto fail;
            }
            v = kiln_graph_add_value(g, outs.names[i]);
            if (v < 0) { name_list_free(&outs); st = kiln_fail(L->e, KILN_ERR_NO_MEMORY, "out of memory"); goto fail; }
            g->values[v].producer = g->n_nodes - 1;
            n = &g->nodes[g->n_nodes - 1];
            n->out[i] = v;
        }
        name_list_free(&outs);
    }

    /* 4. value_info (declared intermediate types) */
    r = kiln_pb_make(data, len);
    while (kiln_pb_next(&r, &f) == 1) {
        if (f.num != 13 || f.type != KILN_PB_LEN) continue;
        if ((st = parse_value_info(L, f.data, f.len, &name, &type, &has_type))) goto fail;
        int v = kiln_graph_find_value(g, name);
        if (v >= 0 && !g->values[v].has_type && has_type) {
            g->values[v].type = type;
            g->values[v].has_type = 1;
        }
        free(name);
        name = NULL;
    }

    /* 5. full nodes: attributes (subgraphs) and inputs */
    {
        int idx = 0;
        r = kiln_pb_make(data, len);
        while (kiln_pb_next(&r, &f) == 1) {
            if (f.num != 1 || f.type != KILN_PB_LEN) continue;
            if ((st = parse_node(L, g, idx, f.data, f.len))) goto fail;
            idx++;
        }
    }

    /* 6. outputs */
    r = kiln_pb_make(data, len);
    while (kiln_pb_next(&r, &f) == 1) {
        if (f.num != 12 || f.type != KILN_PB_LEN) continue;
        if ((st = parse_value_info(L, f.data, f.len, &name, &type, &has_type))) goto fail;
        int v = resolve_name(g, name);
        if (v < 0) {
            st = kiln_fail(L->e, KILN_ERR_INVALID_MODEL, "graph output '%s' is not produced by any node", name);
            goto fail;
        }
        if (has_type && (!g->values[v].has_type || g->values[v].producer >= 0)) {
            g->values[v].type = type;
            g->values[v].has_type = 1;
        }
        int *outs = realloc(g->outputs, (size_t)(g->n_outputs + 1) * sizeof(int));
        if (!outs) { st = kiln_fail(L->e, KILN_ERR_NO_MEMORY, "out of memory"); goto fail; }
        g->outputs = outs;
        outs[g->n_outputs++] = v;
        free(name);
        name = NULL;
    }
    if ((st = topo_sort(L, g))) goto fail;
    L->depth--;
    *out = g;
    return KILN_OK;
fail:
    free(name);
    L->depth--;
    kiln_graph_free(g);
    return st;
}

/* ---------------------------------------------------------------- ModelProto */

/* metadata_props: StringStringEntryProto {1 key, 2 value} */
static kiln_status parse_prop(loader *L, const uint8_t *data, size_t len) {
    kiln_model *m = L->m;
    kiln_pb r = kiln_pb_make(data, len);
    kiln_pb_field f;
    int rc;
    char *key = NULL, *val = NULL;
    while ((rc = kiln_pb_next(&r, &f)) == 1) {
        if (f.type != KILN_PB_LEN) continue;
        if (f.num == 1) { free(key); key = dup_bytes(f.data, f.len); }
        if (f.num == 2) { free(val); val = dup_bytes(f.data, f.len); }
    }
    if (!key) key = strdup("");
    if (!val) val = strdup("");
    char **k = key && val ? realloc(m->prop_keys, (size_t)(m->n_props + 1) * sizeof *k) : NULL;
    if (k) m->prop_keys = k;
    char **v = k ? realloc(m->prop_values, (size_t)(m->n_props + 1) * sizeof *v) : NULL;
    if (v) m->prop_values = v;
    if (!k || !v) {
        free(key);
        free(val);
        return kiln_fail(L->e, KILN_ERR_NO_MEMORY, "out of memory");
    }
    m->prop_keys[m->n_props] = key;
    m->prop_values[m->n_props++] = val;
    return rc < 0 ? bad(L, "metadata_props") : KILN_OK;
}

static kiln_status parse_model(loader *L, const uint8_t *data, size_t len) {
    kiln_model *m = L->m;
    kiln_pb r = kiln_pb_make(data, len);
    kiln_pb_field f;
    int rc, have_graph = 0, n_fields = 0;
    const uint8_t *gdata = NULL;
    size_t glen = 0;
    while ((rc = kiln_pb_next(&r, &f)) == 1) {
        n_fields++;
        switch (f.num) {
        case 1: m->ir_version = (int64_t)f.u; break;
        case 2: if (f.type == KILN_PB_LEN) { free(m->producer); m->producer = dup_bytes(f.data, f.len); } break;
        case 3: if (f.type == KILN_PB_LEN) { free(m->producer_version); m->producer_version = dup_bytes(f.data, f.len); } break;
        case 4: if (f.type == KILN_PB_LEN) { free(m->domain); m->domain = dup_bytes(f.data, f.len); } break;
        case 5: if (f.type == KILN_PB_VARINT) m->model_version = (int64_t)f.u; break;
        case 6: if (f.type == KILN_PB_LEN) { free(m->doc); m->doc = dup_bytes(f.data, f.len); } break;
        case 14: if (f.type == KILN_PB_LEN) KILN_TRY(parse_prop(L, f.data, f.len)); break;
        case 7:
            if (f.type != KILN_PB_LEN) return bad(L, "graph field");
            gdata = f.data;
            glen = f.len;
            have_graph = 1;
            break;
        case 8: {
            if (f.type != KILN_PB_LEN) return bad(L, "opset_import");
            kiln_pb orr = kiln_pb_make(f.data, f.len);
            kiln_pb_field of;
            char *dom = NULL;
            int64_t ver = 0;
            while ((rc = kiln_pb_next(&orr, &of)) == 1) {
                if (of.num == 1 && of.type == KILN_PB_LEN) { free(dom); dom = dup_bytes(of.data, of.len); }
                if (of.num == 2 && of.type == KILN_PB_VARINT) ver = (int64_t)of.u;
            }
            if (rc < 0) { free(dom); return bad(L, "opset_import"); }
            if (!dom) dom = strdup("");
            kiln_opset *os = realloc(m->opsets, (size_t)(m->n_opsets + 1) * sizeof *os);
            if (!os || !dom) { free(dom); return kiln_fail(L->e, KILN_ERR_NO_MEMORY, "out of memory"); }
            m->opsets = os;
            os[m->n_opsets].domain = dom;
            os[m->n_opsets].version = ver;
            m->n_opsets++;
            break;
        }
        default: break;
        }
    }
    if (rc < 0)
        return kiln_fail(L->e, KILN_ERR_INVALID_MODEL,
                         "not a valid ONNX model: the protobuf data is truncated or corrupt");
    if (!have_graph)
        return kiln_fail(L->e, KILN_ERR_INVALID_MODEL, "not an ONNX model: no graph (ModelProto field 7)");
    if (m->ir_version < 3 || m->ir_version > 13)
        return kiln_fail(L->e, KILN_ERR_INVALID_MODEL,
                         "unsupported IR version %lld (kiln reads IR versions 3 to 13)", (long long)m->ir_version);
    if (kiln_model_opset(m, "") < 0 && m->n_opsets == 0)
        return kiln_fail(L->e, KILN_ERR_INVALID_MODEL, "model imports no opset");
    return parse_graph(L, gdata, glen, NULL, &m->graph);
}

static kiln_status load_common(kiln_model *m, const void *bytes, size_t size, const kiln_load_overrides *ov,
                               kiln_model **out, kiln_err *e) {
    loader L = {m, e, 0};
    L.ov = ov;
    kiln_status st = KILN_OK;
    if (ov && ov->n) {
        L.ov_used = calloc(ov->n, 1);
        if (!L.ov_used) st = kiln_fail(e, KILN_ERR_NO_MEMORY, "out of memory");
        for (size_t i = 0; !st && i < ov->n; i++)
            if (!ov->names || !ov->names[i] || !ov->tensors)
                st = kiln_fail(e, KILN_ERR_INVALID_ARGUMENT, "initializer %zu given in the options has no name or tensor", i);
    }
    if (!st) st = parse_model(&L, bytes, size);
    for (size_t i = 0; !st && ov && i < ov->n; i++)
        if (!L.ov_used[i])
            st = kiln_fail(e, KILN_ERR_INVALID_ARGUMENT,
                           "initializer '%s' given in the options is not an initializer of the model's main graph",
                           ov->names[i]);
    free(L.ov_used);
    if (st) {
        kiln_model_free(m);
        return st;
    }
    *out = m;
    return KILN_OK;
}

kiln_status kiln_model_load_bytes_with(const void *bytes, size_t size, const kiln_load_overrides *ov,
                                       kiln_model **out, kiln_err *e) {
    if (!bytes && size) return kiln_fail(e, KILN_ERR_INVALID_ARGUMENT, "model bytes are NULL");
    if (size == 0) return kiln_fail(e, KILN_ERR_INVALID_MODEL, "the model is empty (0 bytes)");
    kiln_model *m = calloc(1, sizeof *m);
    if (!m) return kiln_fail(e, KILN_ERR_NO_MEMORY, "out of memory");
    m->src_bytes = bytes;
    m->src_size = size;
    return load_common(m, bytes, size, ov, out, e);
}

kiln_status kiln_model_load_bytes(const void *bytes, size_t size, kiln_model **out, kiln_err *e) {
    return kiln_model_load_bytes_with(bytes, size, NULL, out, e);
}

kiln_status kiln_model_load_file_with(const char *path, const kiln_load_overrides *ov, kiln_model **out,
                                      kiln_err *e) {
    kiln_model *m = calloc(1, sizeof *m);
    if (!m) return kiln_fail(e, KILN_ERR_NO_MEMORY, "out of memory");
    char *slash = strrchr(path, '/');
    m->dir = slash ? dup_bytes((const uint8_t *)path, (size_t)(slash - path)) : strdup(".");
    if (slash == path) { free(m->dir); m->dir = strdup("/"); }
    loader L = {m, e, 0};
    kiln_mapping *mp;
    kiln_status st = map_file(&L, path, 0, &mp);
    if (st) { kiln_model_free(m); return st; }
    if (mp->size == 0) {
        kiln_model_free(m);
        return kiln_fail(e, KILN_ERR_INVALID_MODEL, "'%s' is empty (0 bytes)", path);
    }
    return load_common(m, mp->addr, mp->size, ov, out, e);
}

kiln_status kiln_model_load_file(const char *path, kiln_model **out, kiln_err *e) {
    return kiln_model_load_file_with(path, NULL, out, e);
}

/* ---------------------------------------------------------------- test data protos */

static kiln_status parse_seq_proto(loader *L, const uint8_t *data, size_t len, kiln_value *v) {
    kiln_pb r = kiln_pb_make(data, len);
    kiln_pb_field f;
    int rc;
    v->kind = KILN_KIND_SEQUENCE;
    while ((rc = kiln_pb_next(&r, &f)) == 1) {
        if (f.num == 3 && f.type == KILN_PB_LEN) {
            kiln_tensor *s = realloc(v->seq, (size_t)(v->seq_len + 1) * sizeof *s);
            if (!s) return kiln_fail(L->e, KILN_ERR_NO_MEMORY, "out of memory");
            v->seq = s;
            char *nm = NULL;
            KILN_TRY(parse_tensor(L, f.data, f.len, &s[v->seq_len], &nm));
            free(nm);
            kiln_tensor *t = &s[v->seq_len];
            if (!t->owner) { /* own the bytes: the proto buffer is temporary */
                kiln_tensor c;
                KILN_TRY(kiln_tensor_copy(&c, t, L->e));
                *t = c;
            }
            v->seq_dtype = t->dtype;
            v->seq_len++;
        } else if (f.num == 5 || f.num == 6) {
            return kiln_fail(L->e, KILN_ERR_NOT_IMPLEMENTED, "nested sequences and maps in SequenceProto");
        }
    }
    return rc < 0 ? bad(L, "truncated SequenceProto") : KILN_OK;
}

kiln_status kiln_parse_value_proto(const void *bytes, size_t size, int kind, kiln_value *v,
                                   char **name, kiln_err *e) {
    kiln_model tmp;
    memset(&tmp, 0, sizeof tmp);
    loader L = {&tmp, e, 0};
    memset(v, 0, sizeof *v);
    kiln_status st = KILN_OK;
    char *nm = NULL;
    if (kind == KILN_KIND_TENSOR) {
        v->kind = KILN_KIND_TENSOR;
        st = parse_tensor(&L, bytes, size, &v->t, &nm);
        if (!st && !v->t.owner) {
            kiln_tensor c;
            st = kiln_tensor_copy(&c, &v->t, e);
            if (!st) v->t = c;
        }
    } else if (kind == KILN_KIND_SEQUENCE) {
        st = parse_seq_proto(&L, bytes, size, v);
    } else { /* OptionalProto {1 name, 2 elem_type, 3 tensor_value, 5 sequence_value} */
        kiln_pb r = kiln_pb_make(bytes, size);
        kiln_pb_field f;
        int rc;
        v->kind = KILN_KIND_NONE;
        while ((rc = kiln_pb_next(&r, &f)) == 1) {
            if (f.type != KILN_PB_LEN) continue;
            if (f.num == 1) { free(nm); nm = dup_bytes(f.data, f.len); }
            if (f.num == 3 || f.num == 5) { /* a repeated field: the last one wins */
                kiln_value_release(v);
                memset(v, 0, sizeof *v);
            }
            if (f.num == 3) {
                v->kind = KILN_KIND_TENSOR;
                char *tn = NULL;
                st = parse_tensor(&L, f.data, f.len, &v->t, &tn);
                free(tn);
                if (!st && !v->t.owner) {
                    kiln_tensor c;
                    st = kiln_tensor_copy(&c, &v->t, e);
                    if (!st) v->t = c;
                }
            }
            if (f.num == 5) st = parse_seq_proto(&L, f.data, f.len, v);
            if (st) break;
        }
        if (!st && rc < 0) st = bad(&L, "truncated OptionalProto");
    }
    for (int i = 0; i < tmp.n_maps; i++) { munmap(tmp.maps[i].addr, tmp.maps[i].size); free(tmp.maps[i].path); }
    free(tmp.maps);
    free(tmp.copies);
    for (int i = 0; i < tmp.n_syms; i++) free(tmp.syms[i]);
    free(tmp.syms);
    if (st) {
        kiln_value_release(v);
        free(nm);
        return st;
    }
    if (name) *name = nm;
    else free(nm);
    return KILN_OK;
}
