/* Fused CPU kernels for the training step; native.py compiles this file at start-up and calls it
 * through ctypes (no Python headers, no torch headers: plain pointers and sizes).
 *
 * Each kernel does in one pass over memory what torch does in several: torch's element-wise
 * operations each stream whole tensors, and the step is limited by memory traffic, not arithmetic.
 * The arithmetic follows torch's, operation for operation (fmaf where torch's vectorized kernels
 * fuse a multiply-add), so results agree with torch's up to the rounding of torch's sqrt.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#define INLINE static inline __attribute__((always_inline))

/* torch.optim.Adadelta's single-tensor step for one dense float32 tensor:
 *   square_avg = square_avg * rho + (1 - rho) * grad * grad
 *   delta      = sqrt(acc_delta + eps) / sqrt(square_avg + eps) * grad
 *   acc_delta  = acc_delta * rho + (1 - rho) * delta * delta
 *   param      = param - lr * delta
 */
void adadelta_step(float *restrict param, const float *restrict grad, float *restrict square_avg,
                   float *restrict acc_delta, long n, float rho, float one_minus_rho, float eps,
                   float neg_lr, int parallel)
{
    #pragma omp parallel for schedule(static) if(parallel)
    for (long i = 0; i < n; i++) {
        const float g = grad[i];
        const float s = fmaf(one_minus_rho * g, g, square_avg[i] * rho);
        const float d = sqrtf(acc_delta[i] + eps) / sqrtf(s + eps) * g;
        square_avg[i] = s;
        acc_delta[i] = fmaf(one_minus_rho * d, d, acc_delta[i] * rho);
        param[i] = fmaf(d, neg_lr, param[i]);
    }
}

/* bfloat16 <-> float32 as torch converts them (round to nearest even, NaN kept quiet). */
INLINE float bf16_to_float(uint16_t bits)
{
    const uint32_t wide = (uint32_t)bits << 16;
    float value;
    memcpy(&value, &wide, sizeof value);
    return value;
}

INLINE uint16_t float_to_bf16(float value)
{
    uint32_t bits;
    if (isnan(value))
        return 0x7FC0;
    memcpy(&bits, &value, sizeof bits);
    bits += 0x7FFFu + ((bits >> 16) & 1u);
    return (uint16_t)(bits >> 16);
}

INLINE float load(const void *base, long i, int bf16)
{
    return bf16 ? bf16_to_float(((const uint16_t *)base)[i]) : ((const float *)base)[i];
}

INLINE void store(void *base, long i, float value, int bf16)
{
    if (bf16)
        ((uint16_t *)base)[i] = float_to_bf16(value);
    else
        ((float *)base)[i] = value;
}

#define DEAD 255   /* code of a pooled element that ReLU or dropout zeroed: no gradient flows */
#define MAX_ROW 4096 /* pooled elements per output row (w/2 * c) the kernels take; native.py checks */

/* keep[t] for the pooled elements first .. first+len-1: their random fields against level.
 * Element i's field: (random[i % nbytes] >> (i / nbytes * bits)) & (2**bits - 1). */
INLINE void row_keep(uint8_t *restrict keep, const uint8_t *restrict random, long nbytes, long first,
                     long len, int bits, int level)
{
    const unsigned field_mask = (1u << bits) - 1u;
    long byte = first % nbytes, shift = first / nbytes * bits;
    if (byte + len <= nbytes) { /* the usual case: one run of bytes, vectorizable */
        const uint8_t *restrict run = random + byte;
        for (long t = 0; t < len; t++)
            keep[t] = (((unsigned)run[t] >> shift) & field_mask) >= (unsigned)level;
        return;
    }
    for (long t = 0; t < len; t++) {
        keep[t] = (((unsigned)random[byte] >> shift) & field_mask) >= (unsigned)level;
        if (++byte == nbytes) {
            byte = 0;
            shift += bits;
        }
    }
}

/* dropout(relu(max_pool2d(x, 2)), p) for x of shape (n, c, h, w) stored channels_last, i.e. as
 * (n, h, w, c); h and w even. Writes y as a contiguous (n, c, h/2, w/2) tensor (flatten(1) is then
 * a view, in the example Net's element order), and code (n, h/2, w/2, c): which of the 2x2 window's
 * elements was the maximum (0..3; on ties the first, and NaN wins, as max_pool2d), or DEAD.
 * Dropout: pooled element i (in (n, h/2, w/2, c) order) keeps when its random field is >= level
 * (the layout of fast_net.keep_mask); random == NULL keeps everything. Survivors are multiplied by
 * scale, which the caller has rounded to the tensor's dtype, as the torch path's mask is.
 * Branch-free inner loops: the comparisons are data-dependent, so branches would mispredict. */
INLINE void pool_row(const void *x, void *y, uint8_t *code, const uint8_t *random, long nbytes,
                     int bits, int level, float scale, long c, long h, long w, long row, int bf16)
{
    const long oh = h / 2, ow = w / 2, row_len = ow * c;
    const long b = row / oh, r = row % oh;
    uint8_t keep[MAX_ROW];
    float out[MAX_ROW];
    uint8_t *restrict code_row = code + row * row_len;
    if (random)
        row_keep(keep, random, nbytes, row * row_len, row_len, bits, level);
    else
        memset(keep, 1, (size_t)row_len);
    for (long j = 0; j < ow; j++) {
        const long top = ((b * h + 2 * r) * w + 2 * j) * c, bottom = top + w * c;
        for (long k = 0; k < c; k++) {
            const long t = j * c + k;
            float best = load(x, top + k, bf16), v;
            int where = 0, take;
            v = load(x, top + c + k, bf16);
            take = (v > best) | (v != v);
            best = take ? v : best;
            where = take ? 1 : where;
            v = load(x, bottom + k, bf16);
            take = (v > best) | (v != v);
            best = take ? v : best;
            where = take ? 2 : where;
            v = load(x, bottom + c + k, bf16);
            take = (v > best) | (v != v);
            best = take ? v : best;
            where = take ? 3 : where;
            /* !(best <= 0): positive, or NaN, which passes ReLU as in torch (a diverged run shows) */
            const int live = (!(best <= 0.0f)) & keep[t];
            code_row[t] = live ? (uint8_t)where : DEAD;
            out[t] = live ? best * scale : 0.0f;
        }
    }
    /* (w/2, c) -> (c, w/2): y's channels are h/2 * w/2 apart */
    for (long k = 0; k < c; k++)
        for (long j = 0; j < ow; j++)
            store(y, ((b * c + k) * oh + r) * ow + j, out[j * c + k], bf16);
}

/* One function per dtype, called per row from the parallel loop: inside, every size is a local
 * value and the dtype a constant, which the vectorizer needs (OpenMP's shared variables are not). */
static void pool_row_bf16(const void *x, void *y, uint8_t *code, const uint8_t *random, long nbytes,
                          int bits, int level, float scale, long c, long h, long w, long row)
{
    pool_row(x, y, code, random, nbytes, bits, level, scale, c, h, w, row, 1);
}

static void pool_row_f32(const void *x, void *y, uint8_t *code, const uint8_t *random, long nbytes,
                         int bits, int level, float scale, long c, long h, long w, long row)
{
    pool_row(x, y, code, random, nbytes, bits, level, scale, c, h, w, row, 0);
}

void pool_relu_dropout(const void *x, void *y, uint8_t *code, const uint8_t *random, long nbytes,
                       int bits, int level, float scale, long n, long c, long h, long w, int bf16)
{
    void (*const each)(const void *, void *, uint8_t *, const uint8_t *, long, int, int, float, long,
                       long, long, long) = bf16 ? pool_row_bf16 : pool_row_f32;
    #pragma omp parallel for schedule(static)
    for (long row = 0; row < n * (h / 2); row++)
        each(x, y, code, random, nbytes, bits, level, scale, c, h, w, row);
}

/* The gradient of pool_relu_dropout: grad (n, c, h/2, w/2) contiguous, times scale, goes to the
 * window element that code names; every other element of grad_x ((n, h, w, c), channels_last)
 * gets zero. Every element of grad_x is written, so it needs no zeroing first. */
INLINE void pool_backward_row(const void *grad, void *grad_x, const uint8_t *code, float scale,
                              long c, long h, long w, long row, int bf16)
{
    const long oh = h / 2, ow = w / 2, row_len = ow * c;
    const long b = row / oh, r = row % oh;
    float g[MAX_ROW];
    const uint8_t *restrict code_row = code + row * row_len;
    for (long k = 0; k < c; k++) /* (c, w/2) -> (w/2, c) */
        for (long j = 0; j < ow; j++)
            g[j * c + k] = load(grad, ((b * c + k) * oh + r) * ow + j, bf16);
    for (long j = 0; j < ow; j++) {
        const long top = ((b * h + 2 * r) * w + 2 * j) * c, bottom = top + w * c;
        for (long k = 0; k < c; k++) {
            const long t = j * c + k;
            const int where = code_row[t];
            const float value = g[t] * scale;
            store(grad_x, top + k, where == 0 ? value : 0.0f, bf16);
            store(grad_x, top + c + k, where == 1 ? value : 0.0f, bf16);
            store(grad_x, bottom + k, where == 2 ? value : 0.0f, bf16);
            store(grad_x, bottom + c + k, where == 3 ? value : 0.0f, bf16);
        }
    }
}

static void pool_backward_row_bf16(const void *grad, void *grad_x, const uint8_t *code, float scale,
                                   long c, long h, long w, long row)
{
    pool_backward_row(grad, grad_x, code, scale, c, h, w, row, 1);
}

static void pool_backward_row_f32(const void *grad, void *grad_x, const uint8_t *code, float scale,
                                  long c, long h, long w, long row)
{
    pool_backward_row(grad, grad_x, code, scale, c, h, w, row, 0);
}

void pool_relu_dropout_backward(const void *grad, void *grad_x, const uint8_t *code, float scale,
                                long n, long c, long h, long w, int bf16)
{
    void (*const each)(const void *, void *, const uint8_t *, float, long, long, long, long) =
        bf16 ? pool_backward_row_bf16 : pool_backward_row_f32;
    #pragma omp parallel for schedule(static)
    for (long row = 0; row < n * (h / 2); row++)
        each(grad, grad_x, code, scale, c, h, w, row);
}
