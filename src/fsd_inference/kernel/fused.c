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
 * after SciPy's sort_indices: the pieces are merged through a bitmap, never sorted.
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
} fsd_weights;

typedef struct {
    int64_t n_rows;
    int64_t *counts;       /* entries of each output row */
    int32_t *indices;
    void *data;
    int64_t nnz;
    int64_t capacity;
    int64_t scaled_rows;   /* rows computed on the power-of-two path */
    int64_t bad_at;        /* with an error: the offending row/column/position */
} fsd_result;

static int grow(fsd_result *r, int64_t need, size_t item) {
    int64_t capacity = r->capacity ? r->capacity : 1024;
    while (capacity < need) capacity *= 2;
    if (capacity == r->capacity) return FSD_OK;
    int32_t *indices = realloc(r->indices, (size_t)capacity * sizeof(int32_t));
    if (!indices) return FSD_NOMEM;
    r->indices = indices;
    void *data = realloc(r->data, (size_t)capacity * item);
    if (!data) return FSD_NOMEM;
    r->data = data;
    r->capacity = capacity;
    return FSD_OK;
}

void fsd_free(fsd_result *r) {
    if (!r) return;
    free(r->counts);
    free(r->indices);
    free(r->data);
    free(r);
}

int64_t fsd_nnz(const fsd_result *r) { return r->nnz; }
int64_t fsd_scaled_rows(const fsd_result *r) { return r->scaled_rows; }
int64_t fsd_bad_at(const fsd_result *r) { return r->bad_at; }

/* Copy a block's rows into the caller's arrays: indptr_out[i] = base + entries up to and
 * including row i of the block (the caller passes &indptr[row0 + 1]). */
void fsd_collect(const fsd_result *r, int64_t base, int64_t *indptr_out, int32_t *indices_out,
                 void *data_out, int64_t item) {
    int64_t at = base;
    for (int64_t i = 0; i < r->n_rows; i++) {
        at += r->counts[i];
        indptr_out[i] = at;
    }
    if (r->nnz) {
        memcpy(indices_out, r->indices, (size_t)r->nnz * sizeof(int32_t));
        memcpy(data_out, r->data, (size_t)r->nnz * (size_t)item);
    }
}

#define WORD_BITS 64
#define WORDS(n) (((n) + WORD_BITS - 1) / WORD_BITS)

#define DEFINE_LAYER(SUFFIX, T, T_MIN_NORMAL, T_MAX)                                          \
int fsd_layer_##SUFFIX(const fsd_piece *pieces, int32_t n_pieces, const fsd_weights *w,       \
                       double bias, double cap, int64_t row0, int64_t row1,                   \
                       fsd_result **out) {                                                    \
    const T bias_t = (T)bias, cap_t = (T)cap, zero = (T)0;                                    \
    const T scale_t = (T)w->scale;                                                            \
    const double abs_scale = w->scale < 0 ? -w->scale : w->scale;                             \
    const double grow_scale = abs_scale > 1.0 ? abs_scale : 1.0;                              \
    const int64_t *Wp = w->indptr;                                                            \
    const int32_t *Wj = w->indices;                                                           \
    const T *Wx = (const T *)w->data;                                                         \
    const int direct = n_pieces == 1 && pieces[0].colptr == NULL;                             \
    int status = FSD_OK;                                                                      \
    fsd_result *r = calloc(1, sizeof(fsd_result));                                            \
    T *sums = calloc((size_t)(w->n_out > 0 ? w->n_out : 1), sizeof(T));                       \
    uint64_t *touched = calloc((size_t)WORDS(w->n_out) + 1, sizeof(uint64_t));                \
    int64_t *cursor = calloc((size_t)n_pieces + 1, sizeof(int64_t));                          \
    T *xval = NULL, *oval = NULL;                                                             \
    int64_t *opos = NULL;                                                                     \
    uint64_t *xmark = NULL;                                                                   \
    if (!direct) {                                                                            \
        xval = malloc((size_t)(w->n_in > 0 ? w->n_in : 1) * sizeof(T));                       \
        oval = malloc((size_t)(w->n_in > 0 ? w->n_in : 1) * sizeof(T));                       \
        opos = malloc((size_t)(w->n_in > 0 ? w->n_in : 1) * sizeof(int64_t));                 \
        xmark = calloc((size_t)WORDS(w->n_in) + 1, sizeof(uint64_t));                         \
    }                                                                                         \
    if (!r || !sums || !touched || !cursor ||                                                 \
        (!direct && (!xval || !oval || !opos || !xmark))) {                                   \
        status = FSD_NOMEM;                                                                   \
        goto done;                                                                            \
    }                                                                                         \
    r->n_rows = row1 - row0;                                                                  \
    r->counts = calloc((size_t)(r->n_rows > 0 ? r->n_rows : 1), sizeof(int64_t));            \
    if (!r->counts) { status = FSD_NOMEM; goto done; }                                        \
    /* each piece's first row at or after row0 (rows ascend): a binary search */              \
    for (int32_t p = 0; p < n_pieces; p++) {                                                  \
        if (pieces[p].rows == NULL) { cursor[p] = row0; continue; }                           \
        int64_t lo = 0, hi = pieces[p].n_rows;                                                \
        while (lo < hi) {                                                                     \
            int64_t mid = lo + (hi - lo) / 2;                                                 \
            if (pieces[p].rows[mid] < row0) lo = mid + 1; else hi = mid;                      \
        }                                                                                     \
        cursor[p] = lo;                                                                       \
    }                                                                                         \
    for (int64_t i = row0; i < row1; i++) {                                                   \
        const int64_t *pos = NULL;                                                            \
        const int32_t *pos32 = NULL;                                                          \
        const T *val;                                                                         \
        int64_t n = 0;                                                                        \
        if (direct) {                                                                         \
            const fsd_piece *pc = &pieces[0];                                                 \
            int64_t at;                                                                       \
            if (pc->rows == NULL) {                                                           \
                if (i >= pc->n_rows) continue;                                                \
                at = i;                                                                       \
            } else {                                                                          \
                if (cursor[0] >= pc->n_rows || pc->rows[cursor[0]] != i) continue;            \
                at = cursor[0]++;                                                             \
            }                                                                                 \
            int64_t a = pc->indptr[at], b = pc->indptr[at + 1];                               \
            pos32 = pc->indices + a;                                                          \
            val = (const T *)pc->data + a;                                                    \
            n = b - a;                                                                        \
            for (int64_t e = 0; e < n; e++) {                                                 \
                if ((uint64_t)pos32[e] >= (uint64_t)w->n_in) {                                \
                    status = FSD_BAD_COLUMN; r->bad_at = i; goto done;                        \
                }                                                                             \
            }                                                                                 \
        } else {                                                                              \
            /* scatter every piece's row i into a dense row, then read it in order */        \
            int64_t lowest = WORDS(w->n_in), highest = -1;                                    \
            for (int32_t p = 0; p < n_pieces; p++) {                                          \
                const fsd_piece *pc = &pieces[p];                                             \
                int64_t at;                                                                   \
                if (pc->rows == NULL) {                                                       \
                    if (i >= pc->n_rows) continue;                                            \
                    at = i;                                                                   \
                } else {                                                                      \
                    if (cursor[p] >= pc->n_rows || pc->rows[cursor[p]] != i) continue;        \
                    at = cursor[p]++;                                                         \
                }                                                                             \
                const T *pv = (const T *)pc->data;                                            \
                for (int64_t e = pc->indptr[at]; e < pc->indptr[at + 1]; e++) {               \
                    int64_t c = pc->indices[e];                                               \
                    if ((uint64_t)c >= (uint64_t)pc->width) {                                 \
                        status = FSD_BAD_COLUMN; r->bad_at = i; goto done;                    \
                    }                                                                         \
                    int64_t f0 = pc->colptr ? pc->colptr[c] : c;                              \
                    int64_t f1 = pc->colptr ? pc->colptr[c + 1] : c + 1;                      \
                    for (int64_t f = f0; f < f1; f++) {                                       \
                        int64_t q = pc->colpos ? pc->colpos[f] : f;                           \
                        if ((uint64_t)q >= (uint64_t)w->n_in) {                               \
                            status = FSD_BAD_POSITION; r->bad_at = i; goto done;              \
                        }                                                                     \
                        int64_t word = q / WORD_BITS;                                         \
                        xmark[word] |= (uint64_t)1 << (q % WORD_BITS);                        \
                        xval[q] = pv[e];                                                      \
                        if (word < lowest) lowest = word;                                     \
                        if (word > highest) highest = word;                                   \
                    }                                                                         \
                }                                                                             \
            }                                                                                 \
            for (int64_t word = lowest; word <= highest; word++) {                            \
                uint64_t bits = xmark[word];                                                  \
                xmark[word] = 0;                                                              \
                while (bits) {                                                                \
                    int64_t q = word * WORD_BITS + __builtin_ctzll(bits);                     \
                    bits &= bits - 1;                                                         \
                    opos[n] = q;                                                              \
                    oval[n] = xval[q];                                                        \
                    n++;                                                                      \
                }                                                                             \
            }                                                                                 \
            pos = opos;                                                                       \
            val = oval;                                                                       \
        }                                                                                     \
        if (n == 0) continue;                                                                 \
        int scaled = 0;                                                                       \
        if (w->scale != 0) {                                                                  \
            double smallest = DBL_MAX, total = 0.0;                                           \
            for (int64_t e = 0; e < n; e++) {                                                 \
                double v = (double)val[e];                                                    \
                v = v < 0 ? -v : v;                                                           \
                total += v;                                                                   \
                if (v != 0 && v < smallest) smallest = v;                                     \
            }                                                                                 \
            scaled = total * 2.0 * grow_scale < (double)T_MAX &&                              \
                     smallest * abs_scale >= (double)T_MIN_NORMAL;                            \
        }                                                                                     \
        if (scaled) {                                                                         \
            r->scaled_rows++;                                                                 \
            for (int64_t e = 0; e < n; e++) {                                                 \
                const int64_t j = pos ? pos[e] : pos32[e];                                    \
                const T v = val[e];                                                           \
                for (int64_t kk = Wp[j]; kk < Wp[j + 1]; kk++) {                              \
                    const int32_t k = Wj[kk];                                                 \
                    sums[k] += v;                                                             \
                    touched[k / WORD_BITS] |= (uint64_t)1 << (k % WORD_BITS);                 \
                }                                                                             \
            }                                                                                 \
        } else {                                                                              \
            for (int64_t e = 0; e < n; e++) {                                                 \
                const int64_t j = pos ? pos[e] : pos32[e];                                    \
                const T v = val[e];                                                           \
                for (int64_t kk = Wp[j]; kk < Wp[j + 1]; kk++) {                              \
                    const int32_t k = Wj[kk];                                                 \
                    sums[k] += v * Wx[kk];                                                    \
                    touched[k / WORD_BITS] |= (uint64_t)1 << (k % WORD_BITS);                 \
                }                                                                             \
            }                                                                                 \
        }                                                                                     \
        if (r->nnz + w->n_out > r->capacity &&                                                \
            grow(r, r->nnz + w->n_out, sizeof(T)) != FSD_OK) {                                \
            status = FSD_NOMEM; goto done;                                                    \
        }                                                                                     \
        int32_t *oi = r->indices + r->nnz;                                                    \
        T *ox = (T *)r->data + r->nnz;                                                        \
        int64_t count = 0;                                                                    \
        const int64_t words = WORDS(w->n_out);                                                \
        for (int64_t word = 0; word < words; word++) {                                        \
            uint64_t bits = touched[word];                                                    \
            if (!bits) continue;                                                              \
            touched[word] = 0;                                                                \
            while (bits) {                                                                    \
                const int32_t k = (int32_t)(word * WORD_BITS + __builtin_ctzll(bits));        \
                bits &= bits - 1;                                                             \
                T s = sums[k];                                                                \
                sums[k] = zero;                                                               \
                if (s != zero) {                                                              \
                    if (scaled) s = s * scale_t;                                              \
                    s = s + bias_t;                                                           \
                    if (s < zero) s = zero;                                                   \
                    else if (s > cap_t) s = cap_t;                                            \
                    if (s != zero) {                                                          \
                        oi[count] = k;                                                        \
                        ox[count] = s;                                                        \
                        count++;                                                              \
                    }                                                                         \
                }                                                                             \
            }                                                                                 \
        }                                                                                     \
        r->counts[i - row0] = count;                                                          \
        r->nnz += count;                                                                      \
    }                                                                                         \
done:                                                                                         \
    free(sums); free(touched); free(cursor);                                                  \
    free(xval); free(oval); free(opos); free(xmark);                                          \
    if (status != FSD_OK && r && status == FSD_NOMEM) { fsd_free(r); r = NULL; }              \
    *out = r;                                                                                 \
    return status;                                                                            \
}

DEFINE_LAYER(f32, float, FLT_MIN, FLT_MAX)
DEFINE_LAYER(f64, double, DBL_MIN, DBL_MAX)
