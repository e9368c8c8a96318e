/*
 * The typed half of fused.c, included once per dtype with T (float or double), SUFFIX
 * (f32 or f64), T_MIN_NORMAL and T_MAX defined. See fused.c for what and why.
 */
#define FSD_CAT2(a, b) a##_##b
#define FSD_CAT(a, b) FSD_CAT2(a, b)
#define FN(name) FSD_CAT(name, SUFFIX)

/* One call's scratch: dense accumulators (zero between rows) and the merge buffers. */
typedef struct {
    T *sums;          /* n_out */
    uint64_t *touched; /* n_out bits: the outputs a sparse row reached */
    T *xval;          /* n_in: the merged input row, by position */
    uint64_t *xmark;  /* n_in bits */
    int32_t *opos;    /* the merged row: positions ascending ... */
    T *oval;          /* ... and their values */
    int64_t *cursor;  /* per piece: its next row */
    int64_t *at;      /* per piece: its row holding the current output row, or -1 */
    T *act;           /* n_rep: each twin class's activation */
} FN(scratch_t);

static void FN(scratch_free)(FN(scratch_t) *s) {
    free(s->sums); free(s->touched); free(s->xval); free(s->xmark);
    free(s->opos); free(s->oval); free(s->cursor); free(s->at); free(s->act);
}

static int FN(scratch_init)(FN(scratch_t) *s, const fsd_piece *pieces, int32_t n_pieces,
                            const fsd_weights *w, int merge, int64_t row0) {
    const size_t n_in = (size_t)(w->n_in > 0 ? w->n_in : 1);
    memset(s, 0, sizeof(*s));
    s->sums = calloc((size_t)(w->n_out > 0 ? w->n_out : 1), sizeof(T));
    s->touched = calloc((size_t)WORDS(w->n_out) + 1, sizeof(uint64_t));
    s->cursor = calloc((size_t)n_pieces + 1, sizeof(int64_t));
    s->at = calloc((size_t)n_pieces + 1, sizeof(int64_t));
    if (w->class_of) s->act = calloc((size_t)(w->n_rep > 0 ? w->n_rep : 1), sizeof(T));
    if (merge) {
        s->xval = malloc(n_in * sizeof(T));
        s->oval = malloc(n_in * sizeof(T));
        s->opos = malloc(n_in * sizeof(int32_t));
        s->xmark = calloc((size_t)WORDS(w->n_in) + 1, sizeof(uint64_t));
    }
    if (!s->sums || !s->touched || !s->cursor || !s->at || (w->class_of && !s->act) ||
        (merge && (!s->xval || !s->oval || !s->opos || !s->xmark))) return FSD_NOMEM;
    /* each piece's first row at or after row0 (rows ascend): a binary search */
    for (int32_t p = 0; p < n_pieces; p++) {
        if (pieces[p].rows == NULL) { s->cursor[p] = row0; continue; }
        int64_t lo = 0, hi = pieces[p].n_rows;
        while (lo < hi) {
            int64_t mid = lo + (hi - lo) / 2;
            if (pieces[p].rows[mid] < row0) lo = mid + 1; else hi = mid;
        }
        s->cursor[p] = lo;
    }
    return FSD_OK;
}

/* The piece row holding output row i, or -1 (advances the piece's cursor). */
static inline int64_t FN(piece_row)(const fsd_piece *pc, int64_t *cursor, int64_t i) {
    if (pc->rows == NULL) return i < pc->n_rows ? i : -1;
    if (*cursor >= pc->n_rows || pc->rows[*cursor] != i) return -1;
    return (*cursor)++;
}

/* Row i's input entries in ascending position. A row held by one piece only, whose
 * columns are the positions (no map, as wide as W has rows): a view of its row. That is
 * every row of a single whole input, and of the row blocks a previous layer handed over
 * as they are (each block a piece of its own rows). Otherwise the first holder whose
 * columns keep their order through its map (no map, or an ordered one: a worker's own
 * columns, most of a row) is copied through the map in one pass, and every other
 * holder's row (the peers' blocks: twins fan out, so their positions are unordered) is
 * scattered into a dense row and merged into it in order through a bitmap (no sort). A
 * position two pieces both name takes the later piece's value, as the scatter does.
 * Returns the entry count, or -1 with *status set when a piece names a column or
 * position out of range. */
static inline int64_t FN(row_view)(const fsd_piece *pc, int64_t at, const int32_t **pos,
                                   const T **val) {
    const int64_t a = pc->indptr[at], n = pc->indptr[at + 1] - a;
    *pos = pc->indices + a;
    *val = (const T *)pc->data + a;
    return n;  /* positions are checked by row_stats */
}

static int64_t FN(gather)(const fsd_piece *pieces, int32_t n_pieces, int64_t n_in, int merge,
                          FN(scratch_t) *s, int64_t i, const int32_t **pos, const T **val,
                          int *status) {
    if (!merge) {
        const int64_t at = FN(piece_row)(&pieces[0], &s->cursor[0], i);
        return at < 0 ? 0 : FN(row_view)(&pieces[0], at, pos, val);
    }
    int32_t holders = 0, holder = -1;
    for (int32_t p = 0; p < n_pieces; p++) {
        s->at[p] = FN(piece_row)(&pieces[p], &s->cursor[p], i);
        if (s->at[p] >= 0) { holders++; holder = p; }
    }
    if (holders == 0) return 0;
    if (holders == 1 && pieces[holder].colptr == NULL && pieces[holder].width == n_in)
        return FN(row_view)(&pieces[holder], s->at[holder], pos, val);
    int32_t lead = -1;
    for (int32_t p = 0; p < n_pieces && lead < 0; p++)
        if (s->at[p] >= 0 && (pieces[p].colptr == NULL || pieces[p].ordered)) lead = p;
    int64_t lowest = WORDS(n_in), highest = -1;
    for (int32_t p = 0; p < n_pieces; p++) {
        const fsd_piece *pc = &pieces[p];
        const int64_t at = s->at[p];
        if (at < 0 || p == lead) continue;
        const T *pv = (const T *)pc->data;
        for (int64_t e = pc->indptr[at]; e < pc->indptr[at + 1]; e++) {
            const int64_t c = pc->indices[e];
            if ((uint64_t)c >= (uint64_t)pc->width) { *status = FSD_BAD_COLUMN; return -1; }
            const int64_t f0 = pc->colptr ? pc->colptr[c] : c;
            const int64_t f1 = pc->colptr ? pc->colptr[c + 1] : c + 1;
            for (int64_t f = f0; f < f1; f++) {
                const int64_t q = pc->colpos ? pc->colpos[f] : f;
                if ((uint64_t)q >= (uint64_t)n_in) { *status = FSD_BAD_POSITION; return -1; }
                const int64_t word = q / WORD_BITS;
                s->xmark[word] |= (uint64_t)1 << (q % WORD_BITS);
                s->xval[q] = pv[e];
                if (word < lowest) lowest = word;
                if (word > highest) highest = word;
            }
        }
    }
    /* the bitmap is read word by word (each cleared as it is loaded) while the lead's
     * mapped entries are interleaved in position order */
    int64_t n = 0, word = lowest;
    uint64_t bits = 0;
    if (word <= highest) { bits = s->xmark[word]; s->xmark[word] = 0; }
#define FSD_DRAIN(LIMIT)                                                               \
    while (word <= highest) {                                                          \
        if (!bits) {                                                                   \
            if (++word > highest) break;                                               \
            bits = s->xmark[word];                                                     \
            s->xmark[word] = 0;                                                        \
            continue;                                                                  \
        }                                                                              \
        const int64_t q_ = word * WORD_BITS + __builtin_ctzll(bits);                   \
        if (q_ >= (LIMIT)) break;                                                      \
        bits &= bits - 1;                                                              \
        s->opos[n] = (int32_t)q_;                                                      \
        s->oval[n] = s->xval[q_];                                                      \
        n++;                                                                           \
    }
    if (lead >= 0) {
        const fsd_piece *pc = &pieces[lead];
        const T *pv = (const T *)pc->data;
        const int64_t at = s->at[lead];
        for (int64_t e = pc->indptr[at]; e < pc->indptr[at + 1]; e++) {
            const int64_t c = pc->indices[e];
            if ((uint64_t)c >= (uint64_t)pc->width) { *status = FSD_BAD_COLUMN; return -1; }
            int64_t q = c;
            if (pc->colptr) {
                const int64_t f = pc->colptr[c];
                if (pc->colptr[c + 1] == f) continue; /* a column this layer does not need */
                q = pc->colpos ? pc->colpos[f] : f;
            }
            if ((uint64_t)q >= (uint64_t)n_in) { *status = FSD_BAD_POSITION; return -1; }
            FSD_DRAIN(q)
            if (word == q / WORD_BITS && (bits >> (q % WORD_BITS) & 1)) continue; /* later */
            s->opos[n] = (int32_t)q;
            s->oval[n] = pv[e];
            n++;
        }
    }
    FSD_DRAIN(INT64_MAX)
#undef FSD_DRAIN
    *pos = s->opos;
    *val = s->oval;
    return n;
}

/* One pass over a row's entries: the products it makes (``edges``), whether every
 * position is a row of W, and whether the row may be summed plainly and scaled once
 * (all weights c = +-2^e): only when no term y*c leaves the normal range and no partial
 * sum can overflow (see fused.c). */
typedef struct {
    int64_t edges;
    int valid;
    int plain;
} FN(row_stats_t);

static inline FN(row_stats_t) FN(row_stats)(const int32_t *pos, const T *val, int64_t n,
                                            const int64_t *Wp, int64_t n_in, double scale) {
    FN(row_stats_t) st = {0, 1, 0};
    double smallest = DBL_MAX, total = 0.0;
    for (int64_t e = 0; e < n; e++) {
        const int32_t j = pos[e];
        if ((uint64_t)j >= (uint64_t)n_in) { st.valid = 0; return st; }
        st.edges += Wp[j + 1] - Wp[j];
        double v = (double)val[e];
        v = v < 0 ? -v : v;
        total += v;
        smallest = (v != 0 && v < smallest) ? v : smallest;
    }
    if (scale != 0) {
        const double abs_scale = scale < 0 ? -scale : scale;
        st.plain = total * 2.0 * (abs_scale > 1.0 ? abs_scale : 1.0) < (double)T_MAX &&
                   smallest * abs_scale >= (double)T_MIN_NORMAL;
    }
    return st;
}

/* sums[k] += y_j * w_jk over the row's entries in order (SciPy's csr_matmat), or the
 * plain sums[k] += y_j; a sparse row also marks the outputs it reaches. */
#define FSD_ACCUMULATE(UPDATE, MARK)                                                   \
    for (int64_t e = 0; e < n; e++) {                                                  \
        const int32_t j = pos[e];                                                      \
        const T v = val[e];                                                            \
        const int64_t end = Wp[j + 1];                                                 \
        for (int64_t kk = Wp[j]; kk < end; kk++) {                                     \
            const int32_t k = Wj[kk];                                                  \
            UPDATE;                                                                    \
            MARK;                                                                      \
        }                                                                              \
    }
#define FSD_MARK touched[k / WORD_BITS] |= (uint64_t)1 << (k % WORD_BITS)

static void FN(accumulate)(const int64_t *Wp, const int32_t *Wj, const T *Wx,
                           const int32_t *pos, const T *val, int64_t n, T *sums,
                           uint64_t *touched, int scaled, int sparse) {
    if (scaled && sparse) {
        FSD_ACCUMULATE(sums[k] += v, FSD_MARK)
    } else if (scaled) {
        FSD_ACCUMULATE(sums[k] += v, (void)0)
    } else if (sparse) {
        FSD_ACCUMULATE(sums[k] += v * Wx[kk], FSD_MARK)
    } else {
        FSD_ACCUMULATE(sums[k] += v * Wx[kk], (void)0)
    }
}

/* The activation of a stored sum: scaled back when summed plainly, bias, ReLU, cap.
 * SciPy stores only sums != 0 and only those get the bias, so callers apply it to
 * nonzero sums only. */
static inline T FN(activate)(T s_, int scaled, T scale, T bias, T cap) {
    const T zero = (T)0;
    if (scaled) s_ = s_ * scale;
    s_ = s_ + bias;
    if (s_ < zero) s_ = zero;
    else if (s_ > cap) s_ = cap;
    return s_;
}

/* One output: its activation, stored when != 0. */
#define FSD_EMIT(K)                                                                    \
    do {                                                                               \
        T s_ = sums[K];                                                                \
        if (s_ != zero) {                                                              \
            sums[K] = zero;                                                            \
            s_ = FN(activate)(s_, scaled, scale, bias, cap);                           \
            if (s_ != zero) {                                                          \
                oi[count] = (int32_t)(K);                                              \
                ox[count] = s_;                                                        \
                count++;                                                               \
            }                                                                          \
        }                                                                              \
    } while (0)

/* Row i's outputs in the columns extract[t] (ascending) as (t, value) entries: from
 * the sums before emit clears them (values is NULL), or from each output's twin class
 * after emit_twins (values: act, classes: class_of). */
static int FN(extract_row)(fsd_result *r, int64_t i, const int32_t *extract,
                           int64_t n_extract, const T *sums, const T *act,
                           const int32_t *class_of, int scaled, T scale, T bias, T cap) {
    const T zero = (T)0;
    if (r->x_nnz + n_extract > r->x_capacity &&
        grow_extract(r, r->x_nnz + n_extract, sizeof(T)) != FSD_OK) return FSD_NOMEM;
    int32_t *xi = r->x_indices + r->x_nnz;
    T *xv = (T *)r->x_data + r->x_nnz;
    int64_t count = 0;
    for (int64_t t = 0; t < n_extract; t++) {
        const int32_t k = extract[t];
        T a_;
        if (act) {
            a_ = act[class_of[k]];
        } else {
            const T s_ = sums[k];
            if (s_ == zero) continue;  /* not stored: SciPy gives it no bias */
            a_ = FN(activate)(s_, scaled, scale, bias, cap);
        }
        if (a_ != zero) {
            xi[count] = (int32_t)t;
            xv[count] = a_;
            count++;
        }
    }
    r->x_counts[i] = count;
    r->x_nnz += count;
    return FSD_OK;
}

/* Write row's outputs in ascending column order, leaving sums (and touched) all zero. */
static int64_t FN(emit)(T *sums, uint64_t *touched, int64_t n_out, int sparse, int scaled,
                        T scale, T bias, T cap, int32_t *oi, T *ox) {
    const T zero = (T)0;
    int64_t count = 0;
    if (sparse) {
        const int64_t words = WORDS(n_out);
        for (int64_t word = 0; word < words; word++) {
            uint64_t bits = touched[word];
            if (!bits) continue;
            touched[word] = 0;
            while (bits) {
                const int64_t k = word * WORD_BITS + __builtin_ctzll(bits);
                bits &= bits - 1;
                FSD_EMIT(k);
            }
        }
    } else {
        for (int64_t k = 0; k < n_out; k++) FSD_EMIT(k);
    }
    return count;
}

/* A dense row on the twin path: one activation per class, then every output in
 * ascending column order takes its class's value. */
static int64_t FN(emit_twins)(T *sums, T *act, const int32_t *class_of, int64_t n_rep,
                              int64_t n_out, int scaled, T scale, T bias, T cap, int32_t *oi,
                              T *ox) {
    const T zero = (T)0;
    for (int64_t c = 0; c < n_rep; c++) {
        const T s_ = sums[c];
        T a_ = zero;
        if (s_ != zero) {
            sums[c] = zero;
            a_ = FN(activate)(s_, scaled, scale, bias, cap);
        }
        act[c] = a_;
    }
    int64_t count = 0;
    for (int64_t k = 0; k < n_out; k++) {
        const T a_ = act[class_of[k]];
        if (a_ != zero) {
            oi[count] = (int32_t)k;
            ox[count] = a_;
            count++;
        }
    }
    return count;
}

int FN(fsd_layer)(const fsd_piece *pieces, int32_t n_pieces, const fsd_weights *w,
                  double bias, double cap, int64_t row0, int64_t row1, int64_t capacity,
                  const int32_t *extract, int64_t n_extract, fsd_result **out) {
    const int merge = !(n_pieces == 1 && pieces[0].colptr == NULL);
    const T scale_t = (T)w->scale, bias_t = (T)bias, cap_t = (T)cap;
    int status = FSD_OK;
    FN(scratch_t) s;
    fsd_result *r = calloc(1, sizeof(fsd_result));
    if (!r) { *out = NULL; return FSD_NOMEM; }
    r->n_rows = row1 - row0;
    r->counts = calloc((size_t)(r->n_rows > 0 ? r->n_rows : 1), sizeof(int64_t));
    if (n_extract > 0)
        r->x_counts = calloc((size_t)(r->n_rows > 0 ? r->n_rows : 1), sizeof(int64_t));
    status = FN(scratch_init)(&s, pieces, n_pieces, w, merge, row0);
    if (!r->counts || (n_extract > 0 && !r->x_counts)) status = FSD_NOMEM;
    /* the caller's estimate of the block's output: growing by copies costs ~10% */
    if (status == FSD_OK && capacity > 0 && grow(r, capacity, sizeof(T)) != FSD_OK)
        status = FSD_NOMEM;
    for (int64_t i = row0; i < row1 && status == FSD_OK; i++) {
        const int32_t *pos = NULL;
        const T *val = NULL;
        const int64_t n = FN(gather)(pieces, n_pieces, w->n_in, merge, &s, i, &pos, &val,
                                     &status);
        if (n < 0) { r->bad_at = i; break; }
        if (n == 0) continue;
        const FN(row_stats_t) st = FN(row_stats)(pos, val, n, w->indptr, w->n_in, w->scale);
        if (!st.valid) { status = FSD_BAD_COLUMN; r->bad_at = i; break; }
        const int sparse = st.edges * SPARSE_ROW_FACTOR < w->n_out;
        const int scaled = st.plain;
        r->scaled_rows += scaled;
        const int twins = !sparse && w->class_of != NULL;
        r->twin_rows += twins;
        if (twins) {
            FN(accumulate)(w->rep_indptr, w->rep_indices, (const T *)w->rep_data, pos, val, n,
                           s.sums, s.touched, scaled, 0);
        } else {
            FN(accumulate)(w->indptr, w->indices, (const T *)w->data, pos, val, n, s.sums,
                           s.touched, scaled, sparse);
        }
        if (r->nnz + w->n_out > r->capacity &&
            grow(r, r->nnz + w->n_out, sizeof(T)) != FSD_OK) {
            status = FSD_NOMEM;
            break;
        }
        if (n_extract > 0 && !twins &&
            FN(extract_row)(r, i - row0, extract, n_extract, s.sums, NULL, NULL, scaled,
                            scale_t, bias_t, cap_t) != FSD_OK) {
            status = FSD_NOMEM;
            break;
        }
        int32_t *oi = r->indices + r->nnz;
        T *ox = (T *)r->data + r->nnz;
        const int64_t count =
            twins ? FN(emit_twins)(s.sums, s.act, w->class_of, w->n_rep, w->n_out, scaled,
                                   scale_t, bias_t, cap_t, oi, ox)
                  : FN(emit)(s.sums, s.touched, w->n_out, sparse, scaled, scale_t, bias_t,
                             cap_t, oi, ox);
        r->counts[i - row0] = count;
        r->nnz += count;
        if (n_extract > 0 && twins &&
            FN(extract_row)(r, i - row0, extract, n_extract, NULL, s.act, w->class_of, scaled,
                            scale_t, bias_t, cap_t) != FSD_OK) {
            status = FSD_NOMEM;
            break;
        }
    }
    FN(scratch_free)(&s);
    if (status == FSD_NOMEM) { fsd_free(r); r = NULL; }
    *out = r;
    return status;
}

#undef FSD_EMIT
#undef FSD_MARK
#undef FSD_ACCUMULATE
#undef FN
#undef FSD_CAT
#undef FSD_CAT2
