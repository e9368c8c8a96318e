/*
 * The fused layer kernel of fsd-inference: one pass per block of output rows computes
 *
 *     Z = Y @ W;  Z += bias on the stored entries;  Y' = min(max(Z, 0), cap);  zeros dropped
 *
 * and writes Y' as CSR rows with ascending column indices.
 *
 * Bit-for-bit equal to SciPy's path (csr_matmat, then bias, clip, eliminate_zeros and
 * sort_indices): for output row i and column k, SciPy's csr_matmat (sparsetools/csr.h)
 * starts from sums[k] = 0 and does `sums[k] += y_ij * w_jk` over the entries j of Y's row
 * i in their stored order, and stores only sums that are != 0. This file does exactly
 * those operations in exactly that order, so it must be compiled with
 * -ffp-contract=off (no fused multiply-add: it rounds once where SciPy rounds twice) and
 * without -ffast-math (which reorders sums and flushes subnormals to zero).
 *
 * Inputs come as "pieces": CSR blocks whose rows name output rows and whose columns map
 * to input positions (a worker's own columns plus every peer's block). A row's entries
 * from all pieces are visited in ascending input position, which is the order of Y's row
 * after SciPy's sort_indices: a piece whose columns keep their order (a worker's own) is
 * mapped in one pass, the others merged into it through a bitmap, never sorted.
 *
 * The power-of-two path: when every weight of the layer equals c = +-2^e, each output is
 * a plain sum of the y_ij scaled once. That equals SciPy's sum of the products when no
 * product y_ij * c underflows below the smallest normal number and nothing overflows:
 * then every partial sum of the scaled terms is exactly c times the partial sum of the
 * unscaled ones (both are normal and round alike, or one of them is subnormal, and a sum
 * of two floats that lands in the subnormal range is exact). The guard is checked per row
 * (smallest |y_ij| times |c| at least the smallest normal, twice the sum of |y_ij| times
 * max(1, |c|) below the largest finite value); a row that fails it takes the general path.
 *
 * No Python headers: the library is loaded with ctypes, which releases the GIL during a
 * call, so Python threads run blocks of rows in parallel.
 */
#include <float.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef __FAST_MATH__
#error "fused.c must not be built with -ffast-math: it reorders sums and flushes subnormals"
#endif
#ifdef __clang__
#pragma STDC FP_CONTRACT OFF /* clang (zig cc) honours it; GCC needs -ffp-contract=off */
#endif

#define FSD_OK 0
#define FSD_NOMEM 1
#define FSD_BAD_COLUMN 2
#define FSD_BAD_POSITION 4

typedef struct {
    const int64_t *rows;   /* output row of each piece row, ascending; NULL: row r is row r */
    int64_t n_rows;        /* rows of the piece */
    int64_t width;         /* columns of the piece */
    const int64_t *colptr; /* column c feeds positions colpos[colptr[c]:colptr[c+1]] ... */
    const int64_t *colpos; /* ... (twins fan out, unneeded columns feed none); NULL: c -> c */
    int64_t ordered;       /* 1: each column feeds at most one position, ascending with the
                            * column (a worker's own columns), so a row maps in order */
    const int64_t *indptr;
    const int32_t *indices;
    const void *data;
} fsd_piece;

typedef struct {
    int64_t n_in;          /* rows of W: input positions */
    int64_t n_out;         /* columns of W: output columns */
    const int64_t *indptr;
    const int32_t *indices; /* validated by the caller: 0 <= index < n_out */
    const void *data;
    double scale;          /* != 0: every weight equals this power of two */
    /* Optional (class_of NULL: none): twin outputs. Outputs whose weight columns are
     * identical (same sources, same weights: every dense block of a RadiX-Net) receive
     * the same products in the same order, so their sums are equal bit for bit. A dense
     * row then sums only one representative per class (rep_*: W's n_rep representative
     * columns, in CSR) and writes each output k the value of its class class_of[k]. */
    int64_t n_rep;
    const int64_t *rep_indptr;
    const int32_t *rep_indices;
    const void *rep_data;
    const int32_t *class_of;
} fsd_weights;

typedef struct {
    int64_t n_rows;
    int64_t *counts;       /* entries of each output row */
    int32_t *indices;
    void *data;
    int64_t nnz;
    int64_t capacity;
    int64_t scaled_rows;   /* rows computed on the power-of-two path */
    int64_t twin_rows;     /* rows computed on the twin path */
    int64_t bad_at;        /* with an error: the offending row/column/position */
    /* Optional (n_extract > 0): the same rows' outputs in the columns extract[0..n_extract)
     * only, as CSR with column t standing for extract[t]: what a worker sends, taken from
     * the dense sums while they are in cache instead of sliced out of the result later */
    int64_t *x_counts;
    int32_t *x_indices;
    void *x_data;
    int64_t x_nnz;
    int64_t x_capacity;
} fsd_result;

/* Grow a pair of column and value arrays to hold at least need entries (doubling). */
static int grow_arrays(int32_t **indices, void **data, int64_t *capacity, int64_t need,
                       size_t item, int64_t initial) {
    int64_t wanted = *capacity ? *capacity : initial;
    while (wanted < need) wanted *= 2;
    if (wanted == *capacity) return FSD_OK;
    int32_t *more = realloc(*indices, (size_t)wanted * sizeof(int32_t));
    if (!more) return FSD_NOMEM;
    *indices = more;
    void *bigger = realloc(*data, (size_t)wanted * item);
    if (!bigger) return FSD_NOMEM;
    *data = bigger;
    *capacity = wanted;
    return FSD_OK;
}

static int grow(fsd_result *r, int64_t need, size_t item) {
    return grow_arrays(&r->indices, &r->data, &r->capacity, need, item, 1024);
}

static int grow_extract(fsd_result *r, int64_t need, size_t item) {
    return grow_arrays(&r->x_indices, &r->x_data, &r->x_capacity, need, item, 256);
}

void fsd_free(fsd_result *r) {
    if (!r) return;
    free(r->counts);
    free(r->indices);
    free(r->data);
    free(r->x_counts);
    free(r->x_indices);
    free(r->x_data);
    free(r);
}

/* Hand the block's column and value arrays to the caller, shrunk to nnz entries (in
 * place: glibc's realloc does not move a shrinking chunk), instead of copying them out:
 * at 4096 neurons x 10,000 rows the copy was a quarter of a layer's time. The caller
 * frees both with fsd_release; fsd_free frees the rest of the result. */
void fsd_detach(fsd_result *r, int32_t **indices, void **data, int64_t item) {
    if (r->nnz > 0 && r->nnz < r->capacity) {
        int32_t *fewer = realloc(r->indices, (size_t)r->nnz * sizeof(int32_t));
        if (fewer) r->indices = fewer;
        void *less = realloc(r->data, (size_t)r->nnz * (size_t)item);
        if (less) r->data = less;
    }
    *indices = r->indices;
    *data = r->data;
    r->indices = NULL;
    r->data = NULL;
    r->capacity = 0;
}

void fsd_release(void *p) { free(p); }

int64_t fsd_nnz(const fsd_result *r) { return r->nnz; }
int64_t fsd_scaled_rows(const fsd_result *r) { return r->scaled_rows; }
int64_t fsd_twin_rows(const fsd_result *r) { return r->twin_rows; }
int64_t fsd_bad_at(const fsd_result *r) { return r->bad_at; }

/* Copy a block's rows into the caller's arrays: indptr_out[i] = base + entries up to and
 * including row i of the block (the caller passes &indptr[row0 + 1]). With indices_out
 * NULL only the row pointers are written (the caller took the arrays: fsd_detach). */
void fsd_collect(const fsd_result *r, int64_t base, int64_t *indptr_out, int32_t *indices_out,
                 void *data_out, int64_t item) {
    int64_t at = base;
    for (int64_t i = 0; i < r->n_rows; i++) {
        at += r->counts[i];
        indptr_out[i] = at;
    }
    if (r->nnz && indices_out) {
        memcpy(indices_out, r->indices, (size_t)r->nnz * sizeof(int32_t));
        memcpy(data_out, r->data, (size_t)r->nnz * (size_t)item);
    }
}

int64_t fsd_extract_nnz(const fsd_result *r) { return r->x_nnz; }

/* Copy a block's extracted rows out: counts_out[i] = entries of row i of the block. */
void fsd_extract_collect(const fsd_result *r, int64_t *counts_out, int32_t *indices_out,
                         void *data_out, int64_t item) {
    if (r->x_counts) memcpy(counts_out, r->x_counts, (size_t)r->n_rows * sizeof(int64_t));
    else memset(counts_out, 0, (size_t)r->n_rows * sizeof(int64_t));
    if (r->x_nnz) {
        memcpy(indices_out, r->x_indices, (size_t)r->x_nnz * sizeof(int32_t));
        memcpy(data_out, r->x_data, (size_t)r->x_nnz * (size_t)item);
    }
}

#define WORD_BITS 64
#define WORDS(n) (((n) + WORD_BITS - 1) / WORD_BITS)
/* A row whose products reach fewer than n_out / SPARSE_ROW_FACTOR outputs marks the
 * outputs it reaches in a bitmap and emits from it; a denser row skips the marking and
 * scans every output (measured: bench/kernel.py). */
#ifndef SPARSE_ROW_FACTOR
#define SPARSE_ROW_FACTOR 4
#endif

#define T float
#define SUFFIX f32
#define T_MIN_NORMAL FLT_MIN
#define T_MAX FLT_MAX
#include "fused_layer.h"
#undef T
#undef SUFFIX
#undef T_MIN_NORMAL
#undef T_MAX

#define T double
#define SUFFIX f64
#define T_MIN_NORMAL DBL_MIN
#define T_MAX DBL_MAX
#include "fused_layer.h"
#undef T
#undef SUFFIX
#undef T_MIN_NORMAL
#undef T_MAX

/*
 * Twin outputs (kernel/twins.py says why they matter): the classes of identical columns
 * of W, found in O(nnz) on W's CSR arrays, without a transposed copy.
 *
 * W must be canonical (ascending columns within a row, no duplicates), so each column's
 * entries are met in ascending row order: a column's hash is built entry by entry over
 * its (row, value bits), and identical columns hash alike. Columns are bucketed by
 * (entry count, hash); each column is checked entry by entry against its bucket's lowest
 * column (the leader's entry in the same row; with equal counts, every entry matching
 * means the columns are equal). Columns that differ
 * (a hash collision) are bucketed again among themselves, until every column matches its
 * leader: the classes are exactly the identical columns. Values are compared as bits
 * (item bytes: 4 or 8), so 0.0 and -0.0 differ, as SciPy's products may.
 *
 * Writes leader[k] (the lowest column of k's class) and class_of[k] (classes numbered by
 * their lowest member); returns the number of classes, or -1 when memory runs out.
 * hash_mask: ~0 in use; tests pass 0 to make every hash collide.
 */
static inline uint64_t value_bits(const void *data, int64_t e, int64_t item) {
    return item == 4 ? ((const uint32_t *)data)[e] : ((const uint64_t *)data)[e];
}

#define TWIN_MIX 0x9E3779B97F4A7C15ULL

int64_t fsd_twin_classes(int64_t n_in, int64_t n_out, const int64_t *indptr,
                         const int32_t *indices, const void *data, int64_t item,
                         uint64_t hash_mask, int64_t *leader, int32_t *class_of) {
    uint64_t *hash = calloc((size_t)(n_out > 0 ? n_out : 1), sizeof(uint64_t));
    int64_t *count = calloc((size_t)(n_out > 0 ? n_out : 1), sizeof(int64_t));
    int64_t *active = malloc((size_t)(n_out > 0 ? n_out : 1) * sizeof(int64_t));
    unsigned char *bad = calloc((size_t)(n_out > 0 ? n_out : 1), 1);
    int64_t slots = 2;
    while (slots < 2 * n_out) slots *= 2;
    int64_t *table = malloc((size_t)slots * sizeof(int64_t));
    int64_t *where = malloc((size_t)(n_out > 0 ? n_out : 1) * sizeof(int64_t));
    int64_t *seen = malloc((size_t)(n_out > 0 ? n_out : 1) * sizeof(int64_t));
    int64_t classes = -1, n_active = n_out;
    if (!hash || !count || !active || !bad || !table || !where || !seen) goto done;

    for (int64_t r = 0; r < n_in; r++) {
        const uint64_t at = ((uint64_t)r + 1) * TWIN_MIX;
        for (int64_t e = indptr[r]; e < indptr[r + 1]; e++) {
            const int32_t c = indices[e];
            uint64_t h = (hash[c] ^ at ^ value_bits(data, e, item)) * TWIN_MIX;
            hash[c] = h ^ (h >> 29);
            count[c]++;
        }
    }
    for (int64_t k = 0; k < n_out; k++) {
        hash[k] &= hash_mask;
        active[k] = k;
        seen[k] = -1;
    }
    while (n_active > 0) {
        /* bucket the active columns (ascending, so each bucket's first is its lowest) */
        for (int64_t s = 0; s < slots; s++) table[s] = -1;
        for (int64_t i = 0; i < n_active; i++) {
            const int64_t k = active[i];
            uint64_t s = (hash[k] ^ ((uint64_t)count[k] * TWIN_MIX)) & (uint64_t)(slots - 1);
            for (;; s = (s + 1) & (uint64_t)(slots - 1)) {
                const int64_t other = table[s];
                if (other < 0) {
                    table[s] = k;
                    leader[k] = k;
                    break;
                }
                if (hash[other] == hash[k] && count[other] == count[k]) {
                    leader[k] = other;
                    break;
                }
            }
        }
        /* check every entry of a column that follows a leader against the leader's
         * entry in the same row (found through where/seen: O(1), no search) */
        for (int64_t r = 0; r < n_in; r++) {
            const int64_t lo = indptr[r], hi = indptr[r + 1];
            for (int64_t e = lo; e < hi; e++) {
                where[indices[e]] = e;
                seen[indices[e]] = r;
            }
            for (int64_t e = lo; e < hi; e++) {
                const int32_t c = indices[e];
                const int64_t l = leader[c];
                if (l == c || bad[c]) continue;
                if (seen[l] != r || value_bits(data, where[l], item) != value_bits(data, e, item))
                    bad[c] = 1;
            }
        }
        n_active = 0;
        for (int64_t k = 0; k < n_out; k++) {
            if (bad[k]) {
                bad[k] = 0;
                active[n_active++] = k;
            }
        }
    }
    classes = 0;
    for (int64_t k = 0; k < n_out; k++)
        class_of[k] = leader[k] == k ? (int32_t)classes++ : class_of[leader[k]];
done:
    free(hash); free(count); free(active); free(bad); free(table); free(where); free(seen);
    return classes;
}
