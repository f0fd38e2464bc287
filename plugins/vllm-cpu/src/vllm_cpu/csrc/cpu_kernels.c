/*
 * vllm-cpu kernels: a work-claiming thread pool, linear layers on packed weights (one register-
 * blocked kernel from GEMV to GEMM, float32 and bfloat16), paged decode attention and the fused
 * elementwise ops of a decoder layer. Plain C with AVX-512 (F, BW, VL, DQ, BF16) intrinsics,
 * called through ctypes on tensors' data pointers; built at first use by vllm_cpu.kernels.
 *
 * Why a pool of our own: OpenMP's static split makes every parallel region wait at a barrier for
 * all threads. On a shared machine a descheduled thread turns each barrier into a scheduler time
 * slice (measured: a [8,576]x[576,3072] GEMM took 15 ms instead of 0.2 ms). Here the calling
 * thread publishes a job of small chunks that every thread claims with a compare-and-swap, and
 * waits only for chunks that were claimed: a worker that is not running claims nothing, and the
 * caller does its share.
 *
 * Numerics: float32 accumulation everywhere; bf16 products are exact (dpbf16); results are
 * rounded to the model dtype at the same points as the native PyTorch ops.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <immintrin.h>
#include <linux/futex.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

typedef uint16_t bf16;

/* ------------------------------------------------------------------------------ thread pool */

typedef void (*task_fn)(void *ctx, int chunk);

typedef struct {
    task_fn fn;
    void *ctx;
    int n_chunks;
    _Atomic int done;
} job_t;

#define MAX_THREADS 64

static struct {
    int n_workers;
    pthread_t threads[MAX_THREADS];
    job_t jobs[2];              /* double buffer: job g lives in jobs[g & 1] */
    _Atomic uint64_t state;     /* (generation << 32) | next chunk to claim */
    _Atomic uint32_t gen32;     /* futex word: low 32 bits of the generation */
    _Atomic int sleepers;
    _Atomic int stop;
    long spin_ns;
    uint64_t gen;               /* owned by the caller thread */
    /* stall guard (caller thread only): after a job whose last chunk kept the caller waiting
     * far longer than a chunk takes (a worker descheduled mid-chunk by another process), run
     * jobs on the caller alone for backoff_ns, doubling on repeated stalls */
    long solo_until_ns, backoff_ns;
    long stalls, n_jobs;
    /* load guard (caller thread only): runnable threads of other processes, from
     * /proc/loadavg every LOAD_CHECK_NS; while they would take a core, the caller runs alone */
    _Atomic int awake;          /* workers not parked in futex_wait */
    int loadavg_fd, busy;
    long next_check_ns, busy_checks;
    float others_ema;
    int mode;                   /* 0 guarded (default), 1 always the pool, 2 always the caller alone */
    int wait;                   /* WAIT_SPIN, WAIT_YIELD (default), WAIT_PASSIVE */
} pool;

/* Wait policies (VLLM_CPU_POOL): how an idle worker waits for the next job and how the caller
 * waits for chunks that other threads claimed.
 *   spin:    workers spin (pause) for spin_ns, then sleep on the futex; the caller spins;
 *   yield:   pause for YIELD_AFTER_NS, then sched_yield() until spin_ns, then sleep; the caller
 *            pauses for YIELD_AFTER_NS, then yields: a neighbour process that wants the core
 *            gets it at once instead of after a time slice;
 *   passive: workers sleep on the futex as soon as there is no chunk; the caller yields. */
enum { WAIT_SPIN = 0, WAIT_YIELD = 1, WAIT_PASSIVE = 2 };
#define YIELD_AFTER_NS 20000L    /* 20 us */

#define LOAD_CHECK_NS 20000000L  /* 20 ms */
#define BUSY_ENTER 0.75f         /* others_ema above: caller alone */
#define BUSY_LEAVE 0.35f         /* others_ema below: the pool again */

#define STALL_MIN_NS 100000L     /* 0.1 ms */
#define BACKOFF_MIN_NS 20000000L /* 20 ms */
#define BACKOFF_MAX_NS 2000000000L

static long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000L + ts.tv_nsec;
}

/* Claim and run chunks of generation g until none is left; returns how many ran. */
static int run_chunks(uint64_t g) {
    job_t *job = &pool.jobs[g & 1];
    int ran = 0;
    for (;;) {
        uint64_t s = atomic_load(&pool.state);
        if ((s >> 32) != g) break;
        int idx = (int)(s & 0xffffffffu);
        task_fn fn = job->fn;
        void *ctx = job->ctx;
        int n = job->n_chunks;
        if (idx >= n) break;
        if (!atomic_compare_exchange_weak(&pool.state, &s, s + 1)) continue;
        fn(ctx, idx);
        atomic_fetch_add(&job->done, 1);
        ran++;
    }
    return ran;
}

static void *worker_main(void *arg) {
    (void)arg;
    uint64_t seen = atomic_load(&pool.state) >> 32;
    while (!atomic_load(&pool.stop)) {
        uint64_t g = atomic_load(&pool.state) >> 32;
        if (g != seen) {
            seen = g;
            run_chunks(g);
            continue;
        }
        /* wait for the next job (decode steps issue jobs every few microseconds): spin, yield
         * or sleep at once, as the wait policy says (see vc_pool_set_wait), then sleep */
        long t0 = now_ns();
        int woke = 0;
        const long budget = pool.wait == WAIT_PASSIVE ? 0 : pool.spin_ns;
        const long pause_ns = pool.wait == WAIT_SPIN ? budget : YIELD_AFTER_NS;
        for (long t = 0; t < budget; t = now_ns() - t0) {
            if (t < pause_ns) for (int i = 0; i < 64; i++) _mm_pause();
            else sched_yield();
            if ((atomic_load(&pool.state) >> 32) != seen || atomic_load(&pool.stop)) { woke = 1; break; }
        }
        if (woke) continue;
        uint32_t w = (uint32_t)seen;
        atomic_fetch_add(&pool.sleepers, 1);
        atomic_fetch_sub(&pool.awake, 1);
        if (atomic_load(&pool.gen32) == w && !atomic_load(&pool.stop))
            syscall(SYS_futex, &pool.gen32, FUTEX_WAIT_PRIVATE, w, NULL, NULL, 0);
        atomic_fetch_add(&pool.awake, 1);
        atomic_fetch_sub(&pool.sleepers, 1);
    }
    return NULL;
}

/* Start n_threads - 1 workers (the caller is the n-th). Returns the number of threads. */
int vc_pool_init(int n_threads, long spin_us) {
    if (pool.n_workers > 0) return pool.n_workers + 1;
    if (n_threads < 1) n_threads = 1;
    if (n_threads > MAX_THREADS) n_threads = MAX_THREADS;
    pool.spin_ns = spin_us * 1000L;
    pool.wait = WAIT_YIELD;
    atomic_store(&pool.state, 0);
    pool.loadavg_fd = open("/proc/loadavg", O_RDONLY | O_CLOEXEC);
    for (int i = 0; i < n_threads - 1; i++) {
        atomic_fetch_add(&pool.awake, 1);
        if (pthread_create(&pool.threads[i], NULL, worker_main, NULL) != 0) {
            atomic_fetch_sub(&pool.awake, 1);
            break;
        }
        pool.n_workers++;
    }
    return pool.n_workers + 1;
}

int vc_pool_size(void) { return pool.n_workers + 1; }

/* 0 spin, 1 yield, 2 passive (see WAIT_*); returns the policy set. */
int vc_pool_set_wait(int policy) {
    pool.wait = policy < WAIT_SPIN || policy > WAIT_PASSIVE ? WAIT_YIELD : policy;
    return pool.wait;
}

void vc_pool_set_spin(long spin_us) { pool.spin_ns = spin_us * 1000L; }

/* 0: guarded (the caller runs alone while other processes want the cores or after a stall);
 * 1: always the pool; 2: always the caller alone (tests of both paths, measurements). */
void vc_pool_set_mode(int mode) {
    pool.mode = mode;
    pool.solo_until_ns = 0;
    pool.busy = 0;
}

/* Runnable threads of other processes now: the "running" field of /proc/loadavg less this
 * thread and the workers that are awake (spinning or working). -1 when unreadable. */
static int others_runnable(void) {
    char buf[128];
    if (pool.loadavg_fd < 0) return -1;
    ssize_t n = pread(pool.loadavg_fd, buf, sizeof buf - 1, 0);
    if (n <= 0) return -1;
    buf[n] = 0;
    const char *p = buf;
    for (int field = 0; field < 3 && p; field++) { /* skip the three load averages */
        p = strchr(p, ' ');
        if (p) p++;
    }
    if (!p) return -1;
    return atoi(p) - 1 - atomic_load(&pool.awake);
}

static int machine_busy(long now) {
    if (pool.mode) return pool.mode == 2;
    if (now < pool.next_check_ns) return pool.busy;
    pool.next_check_ns = now + LOAD_CHECK_NS;
    int others = others_runnable();
    if (others < 0) return pool.busy = 0;
    pool.others_ema = 0.75f * pool.others_ema + 0.25f * (float)others;
    if (pool.busy ? pool.others_ema < BUSY_LEAVE : pool.others_ema > BUSY_ENTER) pool.busy = !pool.busy;
    pool.busy_checks += pool.busy;
    return pool.busy;
}

/* Run fn(ctx, 0..n_chunks-1) over the pool; returns when every chunk has finished. */
static void parallel_for(task_fn fn, void *ctx, int n_chunks) {
    if (n_chunks <= 0) return;
    long now = pool.n_workers ? now_ns() : 0;
    if (pool.n_workers == 0 || n_chunks == 1 || machine_busy(now) ||
        (pool.solo_until_ns && now < pool.solo_until_ns)) {
        for (int i = 0; i < n_chunks; i++) fn(ctx, i);
        return;
    }
    pool.n_jobs++;
    long t0 = now;
    uint64_t g = ++pool.gen;
    job_t *job = &pool.jobs[g & 1];
    job->fn = fn;
    job->ctx = ctx;
    job->n_chunks = n_chunks;
    atomic_store(&job->done, 0);
    atomic_store(&pool.state, g << 32);
    atomic_store(&pool.gen32, (uint32_t)g);
    if (atomic_load(&pool.sleepers) > 0)
        syscall(SYS_futex, &pool.gen32, FUTEX_WAKE_PRIVATE, pool.n_workers, NULL, NULL, 0);
    int ran = run_chunks(g);
    long t1 = now_ns();
    if (atomic_load(&job->done) < n_chunks) {
        const long pause_ns = pool.wait == WAIT_SPIN ? -1 : pool.wait == WAIT_YIELD ? YIELD_AFTER_NS : 0;
        while (atomic_load(&job->done) < n_chunks) {
            if (pause_ns < 0 || now_ns() - t1 < pause_ns) _mm_pause();
            else sched_yield();
        }
        long wait = now_ns() - t1, per_chunk = (t1 - t0) / (ran > 0 ? ran : 1);
        if (!pool.mode && wait > STALL_MIN_NS && wait > 8 * per_chunk) {
            pool.stalls++;
            pool.backoff_ns = pool.backoff_ns ? pool.backoff_ns * 2 : BACKOFF_MIN_NS;
            if (pool.backoff_ns > BACKOFF_MAX_NS) pool.backoff_ns = BACKOFF_MAX_NS;
            pool.solo_until_ns = now_ns() + pool.backoff_ns;
            return;
        }
    }
    if (pool.solo_until_ns) { /* a clean job after a solo period: the machine has room again */
        pool.solo_until_ns = 0;
        pool.backoff_ns /= 2;
    }
}

/* Run a caller-supplied function (a ctypes callback: PyTorch ops that release the GIL) on
 * chunks 0..n_chunks-1 over the pool, with the same claiming and guards as the C kernels. */
void vc_parallel(task_fn fn, int n_chunks) { parallel_for(fn, NULL, n_chunks); }

/* 1 when a job would run on the caller alone now (machine busy or backing off after a stall). */
int vc_pool_solo(void) {
    if (pool.n_workers == 0) return 1;
    long now = now_ns();
    return machine_busy(now) || (pool.solo_until_ns && now < pool.solo_until_ns);
}

/* [jobs run on the pool, stalls seen, load checks that found the machine busy, 1 while the
 * caller runs alone, 1000 x others_ema] */
void vc_pool_stats(long *out) {
    out[0] = pool.n_jobs;
    out[1] = pool.stalls;
    out[2] = pool.busy_checks;
    out[3] = pool.busy || (pool.solo_until_ns && now_ns() < pool.solo_until_ns);
    out[4] = (long)(1000 * pool.others_ema);
}

/* ------------------------------------------------------------------------------ helpers */

static inline __m512 bf16x16_to_f32(__m256i v) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(v), 16));
}

static inline __m512 load_bf16_f32(const bf16 *p) {
    return bf16x16_to_f32(_mm256_loadu_si256((const __m256i *)p));
}

static inline __m512 load_bf16_f32_mask(const bf16 *p, __mmask16 m) {
    return bf16x16_to_f32(_mm256_maskz_loadu_epi16(m, p));
}

/* float32 -> bfloat16, round to nearest even (NaN kept quiet), as torch's .to(bfloat16) */
static inline __m256i f32_to_bf16x16(__m512 v) {
    return (__m256i)_mm512_cvtneps_pbh(v);
}

static inline bf16 f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (bf16)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (bf16)(u >> 16);
}

static inline float bf16_to_f32(bf16 h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline float round_bf16(float f) { return bf16_to_f32(f32_to_bf16(f)); }

static inline __m512 round_bf16_ps(__m512 v) { return bf16x16_to_f32(f32_to_bf16x16(v)); }

/* exp(x) for float32 lanes: Cephes' range reduction and polynomial (about 1 ulp). */
static inline __m512 exp_ps(__m512 x) {
    const __m512 hi = _mm512_set1_ps(88.3762626647949f), lo = _mm512_set1_ps(-103.972084045410f);
    x = _mm512_min_ps(x, hi);
    __mmask16 under = _mm512_cmp_ps_mask(x, lo, _CMP_LT_OQ);
    __m512 fx = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    x = _mm512_fnmadd_ps(fx, _mm512_set1_ps(0.693359375f), x);
    x = _mm512_fnmadd_ps(fx, _mm512_set1_ps(-2.12194440e-4f), x);
    __m512 z = _mm512_mul_ps(x, x);
    __m512 y = _mm512_set1_ps(1.9875691500E-4f);
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(1.3981999507E-3f));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(8.3334519073E-3f));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(4.1665795894E-2f));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(1.6666665459E-1f));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(5.0000001201E-1f));
    y = _mm512_fmadd_ps(y, z, _mm512_add_ps(x, _mm512_set1_ps(1.0f)));
    /* scale by 2^fx in two steps so that fx = 128 (x near the top) does not overflow the exponent */
    __m512i n = _mm512_cvtps_epi32(fx);
    __m512i n1 = _mm512_srai_epi32(n, 1), n2 = _mm512_sub_epi32(n, n1);
    __m512 p1 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(n1, _mm512_set1_epi32(127)), 23));
    __m512 p2 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(n2, _mm512_set1_epi32(127)), 23));
    y = _mm512_mul_ps(_mm512_mul_ps(y, p1), p2);
    return _mm512_mask_mov_ps(y, under, _mm512_setzero_ps());
}

static inline float hsum(__m512 v) { return _mm512_reduce_add_ps(v); }

/* per-thread scratch of the attention kernel, grown on demand */
static __thread float *tls_buf;
static __thread size_t tls_cap;

static float *scratch(size_t n) {
    if (n > tls_cap) {
        free(tls_buf);
        tls_buf = aligned_alloc(64, ((n * sizeof(float)) + 63) & ~(size_t)63);
        tls_cap = n;
    }
    return tls_buf;
}

/* ------------------------------------------------------------- linear: packed weights */
/* One kernel for every batch size. The weight is packed once into panels of NR = 32 output
 * features, k-major: float32 wp[panel][k][32]; bf16 wp[panel][k/2][32][2] (pairs of k for
 * vdpbf16ps; packed by vllm_cpu.kernels.pack_weight). A micro-kernel keeps MR <= 12 rows x 32 outputs of accumulators in registers and
 * walks one panel from start to end: per k it loads 32 weights (two vectors) and broadcasts one
 * value per row. No horizontal sums, one sequential stream per panel (prefetcher friendly) for
 * GEMV, and MR x 32 register blocking for GEMM. No software prefetch: the hardware prefetchers
 * follow a panel, and a prefetch 16 rows ahead cut GEMV from 27 to 22 GB/s (bf16, weights from
 * DRAM) and the down projection at 64 rows from 190 to 139 GFLOP/s (fp32). A chunk of the pool is a tile of rows times a
 * group of panels. */

#define NR 32
#define MR_MAX 12
#define MC 96               /* rows of one tile (8 micro-tiles of 12) */

static inline long panels_of(int N) { return (N + NR - 1) / NR; }

/* A GEMM's pool chunks: tiles of tile_m rows x chunks_n groups of column units (panels). Chunk
 * `chunk` covers rows [*m0, *m1) and returns its column group. */
static inline int chunk_rows(int chunk, int chunks_n, int tile_m, int M, int *m0, int *m1) {
    *m0 = chunk / chunks_n * tile_m;
    *m1 = *m0 + tile_m < M ? *m0 + tile_m : M;
    return chunk % chunks_n;
}

/* column units a chunk takes: about 8 chunks per thread, at least one unit and at most 8 each */
static inline int units_per_chunk(long units, int tiles_m) {
    const long per = units * tiles_m / (8L * vc_pool_size());
    return per < 1 ? 1 : per > 8 ? 8 : (int)per;
}

static inline __attribute__((always_inline)) void mk_f32(
    const int MR, const float *x, long ldx, const float *wp, int K, const float *bias, float *y, long ldy, int nr) {
    __m512 c0[MR_MAX], c1[MR_MAX];
    for (int i = 0; i < MR; i++) c0[i] = c1[i] = _mm512_setzero_ps();
    for (int k = 0; k < K; k++) {
        const float *b = wp + (long)k * NR;
        const __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16);
        for (int i = 0; i < MR; i++) {
            const __m512 a = _mm512_set1_ps(x[i * ldx + k]);
            c0[i] = _mm512_fmadd_ps(a, b0, c0[i]);
            c1[i] = _mm512_fmadd_ps(a, b1, c1[i]);
        }
    }
    const __mmask16 m0 = nr >= 16 ? 0xffff : (__mmask16)((1u << nr) - 1);
    const __mmask16 m1 = nr >= 32 ? 0xffff : nr <= 16 ? 0 : (__mmask16)((1u << (nr - 16)) - 1);
    __m512 bb0 = _mm512_setzero_ps(), bb1 = _mm512_setzero_ps();
    if (bias) { bb0 = _mm512_maskz_loadu_ps(m0, bias); bb1 = _mm512_maskz_loadu_ps(m1, bias + 16); }
    for (int i = 0; i < MR; i++) {
        _mm512_mask_storeu_ps(y + i * ldy, m0, _mm512_add_ps(c0[i], bb0));
        _mm512_mask_storeu_ps(y + i * ldy + 16, m1, _mm512_add_ps(c1[i], bb1));
    }
}

static inline __attribute__((always_inline)) void mk_bf16(
    const int MR, const bf16 *x, long ldx, const bf16 *wp, int K, const bf16 *bias, bf16 *y, long ldy, int nr) {
    __m512 c0[MR_MAX], c1[MR_MAX];
    for (int i = 0; i < MR; i++) c0[i] = c1[i] = _mm512_setzero_ps();
    for (int k = 0; k < K; k += 2) {
        const bf16 *b = wp + (long)k * NR;
        const __m512bh b0 = (__m512bh)_mm512_loadu_si512(b), b1 = (__m512bh)_mm512_loadu_si512(b + 32);
        for (int i = 0; i < MR; i++) {
            int32_t pair;
            memcpy(&pair, x + i * ldx + k, 4);
            const __m512bh a = (__m512bh)_mm512_set1_epi32(pair);
            c0[i] = _mm512_dpbf16_ps(c0[i], a, b0);
            c1[i] = _mm512_dpbf16_ps(c1[i], a, b1);
        }
    }
    const __mmask16 m0 = nr >= 16 ? 0xffff : (__mmask16)((1u << nr) - 1);
    const __mmask16 m1 = nr >= 32 ? 0xffff : nr <= 16 ? 0 : (__mmask16)((1u << (nr - 16)) - 1);
    __m512 bb0 = _mm512_setzero_ps(), bb1 = _mm512_setzero_ps();
    if (bias) { bb0 = load_bf16_f32_mask(bias, m0); bb1 = load_bf16_f32_mask(bias + 16, m1); }
    for (int i = 0; i < MR; i++) {
        _mm256_mask_storeu_epi16(y + i * ldy, m0, f32_to_bf16x16(_mm512_add_ps(c0[i], bb0)));
        _mm256_mask_storeu_epi16(y + i * ldy + 16, m1, f32_to_bf16x16(_mm512_add_ps(c1[i], bb1)));
    }
}

#define MK_CASES(F, ...)                                                                            \
    switch (mr) {                                                                                   \
    case 1: F(1, __VA_ARGS__); break; case 2: F(2, __VA_ARGS__); break;                             \
    case 3: F(3, __VA_ARGS__); break; case 4: F(4, __VA_ARGS__); break;                             \
    case 5: F(5, __VA_ARGS__); break; case 6: F(6, __VA_ARGS__); break;                             \
    case 7: F(7, __VA_ARGS__); break; case 8: F(8, __VA_ARGS__); break;                             \
    case 9: F(9, __VA_ARGS__); break; case 10: F(10, __VA_ARGS__); break;                           \
    case 11: F(11, __VA_ARGS__); break; default: F(12, __VA_ARGS__); break;                         \
    }

typedef struct {
    const void *x, *wp, *bias;
    void *y;
    int M, N, K, is_bf16, tile_m, panels_per_chunk, chunks_n;
    long ldx, ldy;
} packed_args;

static void packed_task(void *p, int chunk) {
    const packed_args *a = p;
    int m0, m1;
    const int tn = chunk_rows(chunk, a->chunks_n, a->tile_m, a->M, &m0, &m1);
    const long p0 = (long)tn * a->panels_per_chunk;
    long p1 = p0 + a->panels_per_chunk;
    if (p1 > panels_of(a->N)) p1 = panels_of(a->N);
    const int K = a->K;
    for (long pn = p0; pn < p1; pn++) {
        const int n0 = (int)(pn * NR), nr = a->N - n0 < NR ? a->N - n0 : NR;
        for (int i0 = m0; i0 < m1; i0 += MR_MAX) {
            const int mr = m1 - i0 < MR_MAX ? m1 - i0 : MR_MAX;
            if (a->is_bf16) {
                const bf16 *x = (const bf16 *)a->x + (long)i0 * a->ldx;
                const bf16 *wp = (const bf16 *)a->wp + pn * (long)K * NR;
                const bf16 *bias = a->bias ? (const bf16 *)a->bias + n0 : NULL;
                bf16 *y = (bf16 *)a->y + (long)i0 * a->ldy + n0;
#define CALL_BF16(R, ...) mk_bf16(R, x, a->ldx, wp, K, bias, y, a->ldy, nr)
                MK_CASES(CALL_BF16, 0)
            } else {
                const float *x = (const float *)a->x + (long)i0 * a->ldx;
                const float *wp = (const float *)a->wp + pn * (long)K * NR;
                const float *bias = a->bias ? (const float *)a->bias + n0 : NULL;
                float *y = (float *)a->y + (long)i0 * a->ldy + n0;
#define CALL_F32(R, ...) mk_f32(R, x, a->ldx, wp, K, bias, y, a->ldy, nr)
                MK_CASES(CALL_F32, 0)
            }
        }
    }
}

/* y[M, N] = x[M, K] @ w^T (+ bias) with w packed by vc_pack_*; x rows ldx apart, y rows ldy. */
void vc_linear_packed(const void *x, long ldx, const void *wp, const void *bias, void *y, long ldy,
                      int M, int N, int K, int is_bf16) {
    const long panels = panels_of(N);
    const int tile_m = M <= MC ? M : MC;
    const int tiles_m = (M + tile_m - 1) / tile_m;
    const int ppc = units_per_chunk(panels, tiles_m);
    const int chunks_n = (int)((panels + ppc - 1) / ppc);
    packed_args a = {x, wp, bias, y, M, N, K, is_bf16, tile_m, ppc, chunks_n, ldx, ldy};
    parallel_for(packed_task, &a, tiles_m * chunks_n);
}

/* ------------------------------------------------- GGUF quantized linear: AVX512-VNNI int8 */
/* y[M, N] = x[M, K] @ w^T (+ bias) with w kept in a GGUF block format (32 weights per block,
 * fp16 scales), repacked by vllm_cpu.quant into panels of QR = 16 output rows. Per panel, per
 * block of 32 k (panel-major, then block, so one panel is one sequential stream):
 *   Q4_0: 256 bytes of nibbles, then 16 fp16 d                    (288 bytes; w = d (q - 8))
 *   Q4_1: 256 bytes of nibbles, then 16 fp16 d, then 16 fp16 m    (320 bytes; w = d q + m)
 *   Q8_0: 512 bytes of q + 128 (u8), then 16 fp16 d               (544 bytes; w = d q)
 * Nibble vector v (0..3), byte 4j + t: low nibble = row j's k = 8v + t, high nibble = its
 * k = 8v + 4 + t; Q8 vector g (0..7), byte 4j + t: row j's k = 4g + t. So one vpdpbusd adds, for
 * each of the 16 rows (one int32 lane each), 4 products of u8 weights and s8 activations.
 *
 * Activations are quantized per row and block of 32 to int8 as llama.cpp's Q8_0 does (d = amax /
 * 127, q = round(x / d)), with the block's sum of q kept for the offset terms:
 *   Q4_0: d_w d_x (S - 8 X)   Q4_1: d_w d_x S + m_w d_x X   Q8_0: d_w d_x (S - 128 X)
 * where S = sum of q_w q_x (the int32 of vpdpbusd) and X = sum of q_x. Float32 accumulation
 * over blocks; the only rounding beyond float32's is the activations' int8 quantization. */

#define QR 16
#define QK 32
#define QMR 8
enum { Q4_0 = 0, Q4_1 = 1, Q8_0 = 2, Q4_K = 3, Q6_K = 4 };
/* Q4_K (super-blocks of 256, 6-bit sub-block scales) is repacked per block of 32 as Q4_1 with
 * float32 d' = d sc and m' = -dmin mn: 256 bytes of nibbles, 16 float32 d', 16 float32 m' (384).
 * Q6_K (super-blocks of 256, int8 scales per 16 weights) per block of 32: 512 bytes of q (0..63,
 * the Q8_0 layout), 16 float32 d sc of the first 16 k, 16 of the last 16 (640); w = d sc (q - 32),
 * so each half of the block has its own dot product and activation sum (xh). */

static inline int q_block_bytes(int qtype) {
    return qtype == Q4_0 ? 288 : qtype == Q4_1 ? 320 : qtype == Q4_K ? 384 : qtype == Q6_K ? 640 : 544;
}

/* Activation precision: 1 = one int8 per element (llama.cpp's Q8_0); 2 = two (hi, lo): q_hi =
 * round(x / d), q_lo = round((x / d - q_hi) * 254), x = d (q_hi + q_lo / 254), about 15 bits,
 * for twice the dot products (set by vc_quant_set_precision). */
static int q_prec = 2;

void vc_quant_set_precision(int prec) { q_prec = prec == 1 ? 1 : 2; }

/* the caller thread's quantized activations, per row and block of 32: P x 32 int8 (hi, then lo),
 * xd [M][K/32] float, xs [M][K/32][P] int32 (the sums of hi, of lo), xh [M][K/32][P][2] int32
 * (the same sums over each half of 16, for Q6_K) */
static int8_t *q_buf;
static size_t q_cap;

static void quantize_row(const void *x, int K, int is_bf16, int P, int8_t *xq, float *xd, int32_t *xs,
                         int32_t *xh) {
    for (int b = 0; b < K / QK; b++) {
        __m512 v0, v1;
        if (is_bf16) {
            v0 = load_bf16_f32((const bf16 *)x + b * QK);
            v1 = load_bf16_f32((const bf16 *)x + b * QK + 16);
        } else {
            v0 = _mm512_loadu_ps((const float *)x + b * QK);
            v1 = _mm512_loadu_ps((const float *)x + b * QK + 16);
        }
        const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
        const float d = amax / 127.0f, id = d > 0.0f ? 1.0f / d : 0.0f;
        const __m512 idv = _mm512_set1_ps(id);
        const __m512 s0 = _mm512_mul_ps(v0, idv), s1 = _mm512_mul_ps(v1, idv);
        const __m512i q0 = _mm512_cvtps_epi32(s0), q1 = _mm512_cvtps_epi32(s1);
        int8_t *out = xq + (size_t)b * QK * P;
        _mm_storeu_si128((__m128i *)out, _mm512_cvtsepi32_epi8(q0));
        _mm_storeu_si128((__m128i *)(out + 16), _mm512_cvtsepi32_epi8(q1));
        xd[b] = d;
        xh[b * P * 2] = _mm512_reduce_add_epi32(q0);
        xh[b * P * 2 + 1] = _mm512_reduce_add_epi32(q1);
        xs[b * P] = xh[b * P * 2] + xh[b * P * 2 + 1];
        if (P == 2) {
            const __m512 k254 = _mm512_set1_ps(254.0f);
            const __m512i l0 = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_sub_ps(s0, _mm512_cvtepi32_ps(q0)), k254));
            const __m512i l1 = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_sub_ps(s1, _mm512_cvtepi32_ps(q1)), k254));
            _mm_storeu_si128((__m128i *)(out + 32), _mm512_cvtsepi32_epi8(l0));
            _mm_storeu_si128((__m128i *)(out + 48), _mm512_cvtsepi32_epi8(l1));
            xh[b * P * 2 + 2] = _mm512_reduce_add_epi32(l0);
            xh[b * P * 2 + 3] = _mm512_reduce_add_epi32(l1);
            xs[b * P + 1] = xh[b * P * 2 + 2] + xh[b * P * 2 + 3];
        }
    }
}

typedef struct {
    const void *x;
    long ldx;
    int K, is_bf16, rows_per_chunk, M, P;
    int8_t *xq;
    float *xd;
    int32_t *xs, *xh;
} qrow_args;

static void quantize_task(void *p, int chunk) {
    const qrow_args *a = p;
    const int es = a->is_bf16 ? 2 : 4, nb = a->K / QK;
    const int r0 = chunk * a->rows_per_chunk, r1 = r0 + a->rows_per_chunk < a->M ? r0 + a->rows_per_chunk : a->M;
    for (int r = r0; r < r1; r++)
        quantize_row((const char *)a->x + (size_t)r * a->ldx * es, a->K, a->is_bf16, a->P,
                     a->xq + (size_t)r * a->K * a->P, a->xd + (size_t)r * nb, a->xs + (size_t)r * nb * a->P,
                     a->xh + (size_t)r * nb * a->P * 2);
}

static inline __attribute__((always_inline)) __m512i dot_block(const __m512i *w, const int32_t *xg) {
    __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
    for (int g = 0; g < 8; g += 2) {
        s0 = _mm512_dpbusd_epi32(s0, w[g], _mm512_set1_epi32(xg[g]));
        s1 = _mm512_dpbusd_epi32(s1, w[g + 1], _mm512_set1_epi32(xg[g + 1]));
    }
    return _mm512_add_epi32(s0, s1);
}

/* the 4 dot-product groups (16 k) of one half of a block, for Q6_K */
static inline __attribute__((always_inline)) __m512i dot_half(const __m512i *w, const int32_t *xg) {
    __m512i s0 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w[0], _mm512_set1_epi32(xg[0]));
    __m512i s1 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w[1], _mm512_set1_epi32(xg[1]));
    s0 = _mm512_dpbusd_epi32(s0, w[2], _mm512_set1_epi32(xg[2]));
    s1 = _mm512_dpbusd_epi32(s1, w[3], _mm512_set1_epi32(xg[3]));
    return _mm512_add_epi32(s0, s1);
}

static inline __attribute__((always_inline)) void mk_q(
    const int MR, const int qtype, const int P, const uint8_t *wp, int nb, const int8_t *xq, const float *xd,
    const int32_t *xs, const int32_t *xh, int K, const void *bias, void *y, long ldy, int nr, int is_bf16) {
    __m512 c[QMR];
    for (int i = 0; i < MR; i++) c[i] = _mm512_setzero_ps();
    const int bb = q_block_bytes(qtype);
    const __m512i lo4 = _mm512_set1_epi8(0x0f);
    const int off = qtype == Q4_0 ? 8 : qtype == Q8_0 ? 128 : 0;
    for (int b = 0; b < nb; b++) {
        const uint8_t *blk = wp + (size_t)b * bb;
        __m512i w[8];
        const uint8_t *sc;
        if (qtype == Q8_0 || qtype == Q6_K) {
            for (int g = 0; g < 8; g++) w[g] = _mm512_loadu_si512(blk + 64 * g);
            sc = blk + 512;
        } else {
            for (int v = 0; v < 4; v++) {
                const __m512i raw = _mm512_loadu_si512(blk + 64 * v);
                w[2 * v] = _mm512_and_si512(raw, lo4);
                w[2 * v + 1] = _mm512_and_si512(_mm512_srli_epi16(raw, 4), lo4);
            }
            sc = blk + 256;
        }
        __m512 d, m = _mm512_setzero_ps();
        if (qtype == Q6_K) {
            const __m512 da = _mm512_loadu_ps((const float *)sc), db = _mm512_loadu_ps((const float *)(sc + 64));
            for (int i = 0; i < MR; i++) {
                const int8_t *xb = xq + ((size_t)i * K + (size_t)b * QK) * P;
                const int32_t *H = xh + ((size_t)i * nb + b) * P * 2;
                const __m512i sa = _mm512_sub_epi32(dot_half(w, (const int32_t *)xb), _mm512_set1_epi32(32 * H[0]));
                const __m512i sb = _mm512_sub_epi32(dot_half(w + 4, (const int32_t *)xb + 4), _mm512_set1_epi32(32 * H[1]));
                __m512 f = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sa), da, _mm512_mul_ps(_mm512_cvtepi32_ps(sb), db));
                if (P == 2) {
                    const int32_t *lo = (const int32_t *)(xb + QK);
                    const __m512i la = _mm512_sub_epi32(dot_half(w, lo), _mm512_set1_epi32(32 * H[2]));
                    const __m512i lb = _mm512_sub_epi32(dot_half(w + 4, lo + 4), _mm512_set1_epi32(32 * H[3]));
                    const __m512 fl = _mm512_fmadd_ps(_mm512_cvtepi32_ps(la), da, _mm512_mul_ps(_mm512_cvtepi32_ps(lb), db));
                    f = _mm512_fmadd_ps(fl, _mm512_set1_ps(1.0f / 254.0f), f);
                }
                c[i] = _mm512_fmadd_ps(f, _mm512_set1_ps(xd[(size_t)i * nb + b]), c[i]);
            }
            continue;
        }
        if (qtype == Q4_K) {
            d = _mm512_loadu_ps(sc);
            m = _mm512_loadu_ps(sc + 64);
        } else {
            d = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)sc));
            if (qtype == Q4_1) m = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(sc + 32)));
        }
        for (int i = 0; i < MR; i++) {
            const int8_t *xb = xq + ((size_t)i * K + (size_t)b * QK) * P;
            const int32_t *X = xs + ((size_t)i * nb + b) * P;
            const float dx = xd[(size_t)i * nb + b];
            __m512i s = dot_block(w, (const int32_t *)xb);
            if (off) s = _mm512_sub_epi32(s, _mm512_set1_epi32(off * X[0]));
            __m512 f = _mm512_cvtepi32_ps(s);
            float xsum = (float)X[0];
            if (P == 2) {
                __m512i sl = dot_block(w, (const int32_t *)(xb + QK));
                if (off) sl = _mm512_sub_epi32(sl, _mm512_set1_epi32(off * X[1]));
                f = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sl), _mm512_set1_ps(1.0f / 254.0f), f);
                xsum += (float)X[1] * (1.0f / 254.0f);
            }
            c[i] = _mm512_fmadd_ps(f, _mm512_mul_ps(d, _mm512_set1_ps(dx)), c[i]);
            if (qtype == Q4_1 || qtype == Q4_K) c[i] = _mm512_fmadd_ps(m, _mm512_set1_ps(dx * xsum), c[i]);
        }
    }
    const __mmask16 mask = nr >= 16 ? 0xffff : (__mmask16)((1u << nr) - 1);
    __m512 bv = _mm512_setzero_ps();
    if (bias) bv = is_bf16 ? load_bf16_f32_mask(bias, mask) : _mm512_maskz_loadu_ps(mask, bias);
    for (int i = 0; i < MR; i++) {
        const __m512 o = _mm512_add_ps(c[i], bv);
        if (is_bf16) _mm256_mask_storeu_epi16((bf16 *)y + i * ldy, mask, f32_to_bf16x16(o));
        else _mm512_mask_storeu_ps((float *)y + i * ldy, mask, o);
    }
}

typedef struct {
    const uint8_t *wp;
    const void *bias;
    void *y;
    const int8_t *xq;
    const float *xd;
    const int32_t *xs, *xh;
    int M, N, K, qtype, is_bf16, tile_m, panels_per_chunk, chunks_n, P;
    long ldy;
} q_args;

static void q_task(void *p, int chunk) {
    const q_args *a = p;
    int m0, m1;
    const int tn = chunk_rows(chunk, a->chunks_n, a->tile_m, a->M, &m0, &m1);
    const long panels = (a->N + QR - 1) / QR, p0 = (long)tn * a->panels_per_chunk;
    const long p1 = p0 + a->panels_per_chunk < panels ? p0 + a->panels_per_chunk : panels;
    const int nb = a->K / QK, es = a->is_bf16 ? 2 : 4;
    const size_t panel_bytes = (size_t)nb * q_block_bytes(a->qtype);
    for (long pn = p0; pn < p1; pn++) {
        const int n0 = (int)(pn * QR), nr = a->N - n0 < QR ? a->N - n0 : QR;
        const uint8_t *wp = a->wp + pn * panel_bytes;
        const void *bias = a->bias ? (const char *)a->bias + (size_t)n0 * es : NULL;
        for (int i0 = m0; i0 < m1; i0 += QMR) {
            const int mr = m1 - i0 < QMR ? m1 - i0 : QMR;
            const int8_t *xq = a->xq + (size_t)i0 * a->K * a->P;
            const float *xd = a->xd + (size_t)i0 * nb;
            const int32_t *xs = a->xs + (size_t)i0 * nb * a->P;
            const int32_t *xh = a->xh + (size_t)i0 * nb * a->P * 2;
            void *y = (char *)a->y + ((size_t)i0 * a->ldy + n0) * es;
#define CALL_Q(R, T) if (a->P == 1) mk_q(R, T, 1, wp, nb, xq, xd, xs, xh, a->K, bias, y, a->ldy, nr, a->is_bf16); \
                     else mk_q(R, T, 2, wp, nb, xq, xd, xs, xh, a->K, bias, y, a->ldy, nr, a->is_bf16)
#define Q_ROWS(T)                                                                                    \
    switch (mr) {                                                                                    \
    case 1: CALL_Q(1, T); break; case 2: CALL_Q(2, T); break; case 3: CALL_Q(3, T); break;           \
    case 4: CALL_Q(4, T); break; case 5: CALL_Q(5, T); break; case 6: CALL_Q(6, T); break;           \
    case 7: CALL_Q(7, T); break; default: CALL_Q(8, T); break;                                       \
    }
            if (a->qtype == Q4_0) { Q_ROWS(Q4_0) }
            else if (a->qtype == Q4_1) { Q_ROWS(Q4_1) }
            else if (a->qtype == Q4_K) { Q_ROWS(Q4_K) }
            else if (a->qtype == Q6_K) { Q_ROWS(Q6_K) }
            else { Q_ROWS(Q8_0) }
#undef Q_ROWS
#undef CALL_Q
        }
    }
}

/* Batched bfloat16 rows on Q4_0 / Q4_1 / Q8_0: dequantize, then the bf16 GEMM. At many rows the
 * int8x2 dot products cost more than the weights' bytes save (the per-row, per-block scale work
 * on top of as many vpdpbusd as the bf16 kernel's vdpbf16ps), so a call of bf16 activations with
 * at least q_bf16_rows rows dequantizes each pair of 16-row panels once, into a thread's scratch
 * in vc_linear_packed's bf16 layout [K/2][32][2], and runs mk_bf16 over the tile's rows. The
 * values are the file's formula in float32 rounded to bf16 (Q4_0 d (q - 8), Q4_1 d q + m, Q8_0
 * d q: gguf's dequantize, then torch's .to(bfloat16)) and the GEMM is the same micro-kernel, so
 * the output equals --quantization none's in bfloat16, bit for bit. 0 rows: never. */
static int q_bf16_rows = 24;
#define QBF_MC 384 /* rows of one tile: each dequantized panel serves them all */
static int q_x_quantized; /* q_buf holds the quantized activations of the last vc_linear_q call's x */

void vc_quant_set_bf16_rows(int rows) { q_bf16_rows = rows < 0 ? 0 : rows; }

/* the 16 x 4 u8 values of u (byte 4j + t: row j, k = kb + t) as weights, into half h of dst */
static inline __attribute__((always_inline)) void dequant_group(
    const int qtype, __m512i u, const __m512 *dp, const __m512 *mp, int kb, bf16 *dst, int h) {
    const __m512 off = _mm512_set1_ps(qtype == Q4_0 ? 8.0f : qtype == Q8_0 ? 128.0f : 0.0f);
    __m512 w[4];
    for (int c = 0; c < 4; c++) {
        __m512 q = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm512_extracti32x4_epi32(u, c)));
        if (qtype != Q4_1) q = _mm512_sub_ps(q, off);
        w[c] = _mm512_mul_ps(dp[c], q);
        if (qtype == Q4_1) w[c] = _mm512_add_ps(w[c], mp[c]);
    }
    /* as 32-bit units (a pair of k of one row): row r, pair p at 2r + p (rows 0-7 in x, 8-15 in y) */
    const __m512i x = (__m512i)_mm512_cvtne2ps_pbh(w[1], w[0]), y = (__m512i)_mm512_cvtne2ps_pbh(w[3], w[2]);
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    _mm512_storeu_si512(dst + (long)(kb / 2) * 2 * NR + 16 * 2 * h, _mm512_permutex2var_epi32(x, even, y));
    _mm512_storeu_si512(dst + (long)(kb / 2 + 1) * 2 * NR + 16 * 2 * h, _mm512_permutex2var_epi32(x, odd, y));
}

/* one packed 16-row panel (nb blocks) as bf16 weights into half h (columns 16h..16h+15) of dst */
static void dequant_panel(const int qtype, const uint8_t *wp, int nb, bf16 *dst, int h) {
    const int bb = q_block_bytes(qtype);
    const __m512i lo4 = _mm512_set1_epi8(0x0f);
    const __m512i rep = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
    for (int b = 0; b < nb; b++) {
        const uint8_t *blk = wp + (size_t)b * bb, *sc = blk + (qtype == Q8_0 ? 512 : 256);
        const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)sc));
        const __m512 m = qtype == Q4_1 ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(sc + 32))) : d;
        __m512 dp[4], mp[4]; /* lane 4j + t of chunk c: row 4c + j */
        for (int c = 0; c < 4; c++) {
            const __m512i idx = _mm512_add_epi32(rep, _mm512_set1_epi32(4 * c));
            dp[c] = _mm512_permutexvar_ps(idx, d);
            mp[c] = _mm512_permutexvar_ps(idx, m);
        }
        const int k0 = b * QK;
        if (qtype == Q8_0) {
            for (int g = 0; g < 8; g++) dequant_group(Q8_0, _mm512_loadu_si512(blk + 64 * g), dp, mp, k0 + 4 * g, dst, h);
        } else {
            for (int v = 0; v < 4; v++) {
                const __m512i raw = _mm512_loadu_si512(blk + 64 * v);
                const __m512i lo = _mm512_and_si512(raw, lo4), hi = _mm512_and_si512(_mm512_srli_epi16(raw, 4), lo4);
                if (qtype == Q4_0) {
                    dequant_group(Q4_0, lo, dp, mp, k0 + 8 * v, dst, h);
                    dequant_group(Q4_0, hi, dp, mp, k0 + 8 * v + 4, dst, h);
                } else {
                    dequant_group(Q4_1, lo, dp, mp, k0 + 8 * v, dst, h);
                    dequant_group(Q4_1, hi, dp, mp, k0 + 8 * v + 4, dst, h);
                }
            }
        }
    }
}

typedef struct {
    const uint8_t *wp;
    const bf16 *x, *bias;
    bf16 *y;
    int M, N, K, qtype, tile_m, pairs_per_chunk, chunks_n;
    long ldx, ldy;
} qbf_args;

static void qbf_task(void *p, int chunk) {
    const qbf_args *a = p;
    int m0, m1;
    const int tn = chunk_rows(chunk, a->chunks_n, a->tile_m, a->M, &m0, &m1);
    const int K = a->K, nb = K / QK;
    const long panels = (a->N + QR - 1) / QR, pairs = (panels + 1) / 2, p0 = (long)tn * a->pairs_per_chunk;
    const long p1 = p0 + a->pairs_per_chunk < pairs ? p0 + a->pairs_per_chunk : pairs;
    const size_t panel_bytes = (size_t)nb * q_block_bytes(a->qtype);
    bf16 *wp = (bf16 *)scratch((size_t)K * NR / 2);
    for (long pr = p0; pr < p1; pr++) {
        const int n0 = (int)(pr * NR), nr = a->N - n0 < NR ? a->N - n0 : NR;
        for (int h = 0; h < 2; h++) {
            if (2 * pr + h < panels) dequant_panel(a->qtype, a->wp + (2 * pr + h) * panel_bytes, nb, wp, h);
            else for (int k2 = 0; k2 < K / 2; k2++) memset(wp + (long)k2 * 2 * NR + 32 * h, 0, 64);
        }
        const bf16 *bias = a->bias ? a->bias + n0 : NULL;
        for (int i0 = m0; i0 < m1; i0 += MR_MAX) {
            const int mr = m1 - i0 < MR_MAX ? m1 - i0 : MR_MAX;
            const bf16 *x = a->x + (long)i0 * a->ldx;
            bf16 *y = a->y + (long)i0 * a->ldy + n0;
            MK_CASES(CALL_BF16, 0)
        }
    }
}

static void linear_q_bf16(const bf16 *x, long ldx, const uint8_t *wp, const bf16 *bias, bf16 *y, long ldy,
                          int M, int N, int K, int qtype) {
    const long pairs = ((N + QR - 1) / QR + 1) / 2;
    const int tile_m = M <= QBF_MC ? M : QBF_MC;
    const int tiles_m = (M + tile_m - 1) / tile_m;
    const int ppc = units_per_chunk(pairs, tiles_m);
    const int chunks_n = (int)((pairs + ppc - 1) / ppc);
    qbf_args a = {wp, x, bias, y, M, N, K, qtype, tile_m, ppc, chunks_n, ldx, ldy};
    parallel_for(qbf_task, &a, tiles_m * chunks_n);
}

/* Repack n GGUF rows (raw: row_bytes apart, K / 32 blocks of the file format each) into the
 * panel layout above (out: ceil(n / 16) * K / 32 * q_block_bytes(qtype) bytes); rows past n are
 * zero blocks (d = 0). Returns 0, or -1 for an unknown qtype or K. */
typedef struct {
    const uint8_t *raw;
    long row_bytes;
    int n, K, qtype;
    uint8_t *out;
} pack_q_args;

static void pack_q_task(void *p, int pn) {
    const pack_q_args *a = p;
    const int nb = a->K / QK, fb = a->qtype == Q4_0 ? 18 : a->qtype == Q4_1 ? 20 : 34, bb = q_block_bytes(a->qtype);
    for (int b = 0; b < nb; b++) {
        uint8_t *dst = a->out + ((size_t)pn * nb + b) * bb;
        memset(dst, 0, bb);
        for (int j = 0; j < QR; j++) {
            const long row = (long)pn * QR + j;
            if (row >= a->n) { /* a zero block: q = 0 (Q8_0 stores q + 128), d = m = 0 */
                if (a->qtype == Q8_0)
                    for (int g = 0; g < 8; g++) memset(dst + 64 * g + 4 * j, 0x80, 4);
                continue;
            }
            const uint8_t *src = a->raw + row * a->row_bytes + (size_t)b * fb;
            if (a->qtype == Q8_0) {
                for (int g = 0; g < 8; g++)
                    for (int t = 0; t < 4; t++) dst[64 * g + 4 * j + t] = src[2 + 4 * g + t] ^ 0x80;
                memcpy(dst + 512 + 2 * j, src, 2);
            } else {
                const uint8_t *qs = src + (a->qtype == Q4_1 ? 4 : 2);
                uint8_t q[32];
                for (int k = 0; k < 16; k++) { q[k] = qs[k] & 15; q[k + 16] = qs[k] >> 4; }
                for (int v = 0; v < 4; v++)
                    for (int t = 0; t < 4; t++) dst[64 * v + 4 * j + t] = q[8 * v + t] | (q[8 * v + 4 + t] << 4);
                memcpy(dst + 256 + 2 * j, src, 2);
                if (a->qtype == Q4_1) memcpy(dst + 288 + 2 * j, src + 2, 2);
            }
        }
    }
}

int vc_pack_q(const void *raw, long row_bytes, int n, int K, int qtype, void *out) {
    if (qtype < Q4_0 || qtype > Q8_0 || K % QK) return -1;
    pack_q_args a = {raw, row_bytes, n, K, qtype, out};
    parallel_for(pack_q_task, &a, (n + QR - 1) / QR);
    return 0;
}

/* y[M, N] (rows ldy elements apart, float32 or bf16 as x) = x[M, K] (rows ldx apart) @ w^T + bias,
 * w packed by vllm_cpu.quant in format qtype (0 Q4_0, 1 Q4_1, 2 Q8_0, 3 Q4_K, 4 Q6_K); K a multiple of 32.
 * x_ready: x is the same as the previous call's (the parts of one fused layer), whose
 * quantized activations are reused. prec: 1 (int8) or 2 (int8x2) activations, 0 the library's
 * setting (vc_quant_set_precision). Returns 0, or -1 for an unknown qtype or K. */
int vc_linear_q(const void *x, long ldx, const void *wp, const void *bias, void *y, long ldy,
                int M, int N, int K, int qtype, int is_bf16, int x_ready, int prec) {
    if (qtype < Q4_0 || qtype > Q6_K || K % QK || M <= 0) return M == 0 ? 0 : -1;
    if (is_bf16 && q_bf16_rows && M >= q_bf16_rows && qtype <= Q8_0) {
        linear_q_bf16(x, ldx, wp, bias, y, ldy, M, N, K, qtype);
        q_x_quantized = 0;
        return 0;
    }
    if (!q_x_quantized) x_ready = 0; /* the previous part ran on the bf16 path: nothing to reuse */
    const int nb = K / QK, P = prec == 1 || prec == 2 ? prec : q_prec;
    const size_t need = (size_t)M * K * P + (size_t)M * nb * 4 * (1 + 3 * P) + 64;
    if (!x_ready) {
        if (need > q_cap) {
            free(q_buf);
            q_buf = aligned_alloc(64, (need + 63) & ~(size_t)63);
            q_cap = need;
        }
    }
    int8_t *xq = q_buf;
    float *xd = (float *)(q_buf + (((size_t)M * K * P + 63) & ~(size_t)63));
    int32_t *xs = (int32_t *)(xd + (size_t)M * nb);
    int32_t *xh = xs + (size_t)M * nb * P;
    if (!x_ready) {
        qrow_args qa = {x, ldx, K, is_bf16, 16, M, P, xq, xd, xs, xh};
        if (M >= 64) parallel_for(quantize_task, &qa, (M + 15) / 16);
        else for (int c = 0; c < (M + 15) / 16; c++) quantize_task(&qa, c);
        q_x_quantized = 1;
    }
    const long panels = (N + QR - 1) / QR;
    const int tile_m = M <= MC ? M : MC;
    const int tiles_m = (M + tile_m - 1) / tile_m;
    const int ppc = units_per_chunk(panels, tiles_m);
    const int chunks_n = (int)((panels + ppc - 1) / ppc);
    q_args a = {wp, bias, y, xq, xd, xs, xh, M, N, K, qtype, is_bf16, tile_m, ppc, chunks_n, P, ldy};
    parallel_for(q_task, &a, tiles_m * chunks_n);
    return 0;
}

/* ----------------------------------------------------------------- paged decode attention */
/* One query token per sequence attends to its own cached tokens, read in place from the paged
 * cache (no gather): scores q.k in float32, softmax, weighted sum of values in float32. One
 * chunk = one (sequence, kv head) pair and its group of query heads. */

typedef struct {
    const void *q;          /* [B, Hq, D] */
    const void *kc, *vc;    /* [num_blocks, block_size, Hk, D] */
    const int32_t *block_tables;
    const int32_t *seq_lens;
    void *out;              /* [B, Hq, D] */
    int B, Hq, Hk, D, block_size, max_blocks, is_bf16;
    long q_stride, out_stride;   /* elements between sequences */
    float scale;
    int heads_per_task;          /* 1 or Hk (d16 kernel) */
} attn_args;

static inline float dot_f32(const float *a, const float *b, int D) {
    __m512 acc = _mm512_setzero_ps();
    int d = 0;
    for (; d + 16 <= D; d += 16) acc = _mm512_fmadd_ps(_mm512_loadu_ps(a + d), _mm512_loadu_ps(b + d), acc);
    if (d < D) {
        __mmask16 m = (__mmask16)((1u << (D - d)) - 1);
        acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + d), _mm512_maskz_loadu_ps(m, b + d), acc);
    }
    return hsum(acc);
}

static inline float dot_bf16(const float *qf, const bf16 *k, int D) {
    __m512 acc = _mm512_setzero_ps();
    int d = 0;
    for (; d + 16 <= D; d += 16) acc = _mm512_fmadd_ps(_mm512_loadu_ps(qf + d), load_bf16_f32(k + d), acc);
    if (d < D) {
        __mmask16 m = (__mmask16)((1u << (D - d)) - 1);
        acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, qf + d), load_bf16_f32_mask(k + d, m), acc);
    }
    return hsum(acc);
}

/* acc[D] += p * v[D] */
static inline void axpy_f32(float *acc, float p, const float *v, int D) {
    __m512 pv = _mm512_set1_ps(p);
    int d = 0;
    for (; d + 16 <= D; d += 16)
        _mm512_storeu_ps(acc + d, _mm512_fmadd_ps(pv, _mm512_loadu_ps(v + d), _mm512_loadu_ps(acc + d)));
    if (d < D) {
        __mmask16 m = (__mmask16)((1u << (D - d)) - 1);
        _mm512_mask_storeu_ps(acc + d, m, _mm512_fmadd_ps(pv, _mm512_maskz_loadu_ps(m, v + d), _mm512_maskz_loadu_ps(m, acc + d)));
    }
}

static inline void axpy_bf16(float *acc, float p, const bf16 *v, int D) {
    __m512 pv = _mm512_set1_ps(p);
    int d = 0;
    for (; d + 16 <= D; d += 16)
        _mm512_storeu_ps(acc + d, _mm512_fmadd_ps(pv, load_bf16_f32(v + d), _mm512_loadu_ps(acc + d)));
    if (d < D) {
        __mmask16 m = (__mmask16)((1u << (D - d)) - 1);
        _mm512_mask_storeu_ps(acc + d, m, _mm512_fmadd_ps(pv, load_bf16_f32_mask(v + d, m), _mm512_maskz_loadu_ps(m, acc + d)));
    }
}

static void decode_attn_task(void *p, int chunk) {
    const attn_args *a = p;
    const int b = chunk / a->Hk, hk = chunk % a->Hk;
    const int G = a->Hq / a->Hk, D = a->D, bs = a->block_size;
    const int L = a->seq_lens[b];
    const int32_t *bt = a->block_tables + (long)b * a->max_blocks;
    const long tok_stride = (long)a->Hk * D, blk_stride = (long)bs * tok_stride;
    /* scratch: scores [G][L], q in float32 [G][D], accumulators [G][D] */
    float *buf = scratch((size_t)G * L + 2 * (size_t)G * D + 16);
    float *scores = buf, *qf = buf + (size_t)G * L, *acc = qf + (size_t)G * D;
    for (int g = 0; g < G; g++) {
        const int h = hk * G + g;
        for (int d = 0; d < D; d++) {
            qf[g * D + d] = a->is_bf16 ? bf16_to_f32(((const bf16 *)a->q)[b * a->q_stride + (long)h * D + d])
                                       : ((const float *)a->q)[b * a->q_stride + (long)h * D + d];
        }
    }
    /* scores */
    for (int t = 0; t < L; t++) {
        const long off = (long)bt[t / bs] * blk_stride + (long)(t % bs) * tok_stride + (long)hk * D;
        for (int g = 0; g < G; g++) {
            float s = a->is_bf16 ? dot_bf16(qf + g * D, (const bf16 *)a->kc + off, D)
                                 : dot_f32(qf + g * D, (const float *)a->kc + off, D);
            scores[(long)g * L + t] = s * a->scale;
        }
    }
    /* softmax per query head */
    for (int g = 0; g < G; g++) {
        float *s = scores + (long)g * L;
        __m512 mx = _mm512_set1_ps(-INFINITY);
        int t = 0;
        for (; t + 16 <= L; t += 16) mx = _mm512_max_ps(mx, _mm512_loadu_ps(s + t));
        float m = _mm512_reduce_max_ps(mx);
        for (; t < L; t++) m = s[t] > m ? s[t] : m;
        __m512 mv = _mm512_set1_ps(m), sum = _mm512_setzero_ps();
        for (t = 0; t + 16 <= L; t += 16) {
            __m512 e = exp_ps(_mm512_sub_ps(_mm512_loadu_ps(s + t), mv));
            _mm512_storeu_ps(s + t, e);
            sum = _mm512_add_ps(sum, e);
        }
        if (t < L) {
            __mmask16 mk = (__mmask16)((1u << (L - t)) - 1);
            __m512 e = exp_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(mk, s + t), mv));
            e = _mm512_maskz_mov_ps(mk, e);
            _mm512_mask_storeu_ps(s + t, mk, e);
            sum = _mm512_add_ps(sum, e);
        }
        float inv = 1.0f / hsum(sum);
        for (t = 0; t < L; t++) s[t] *= inv;
        memset(acc + (long)g * D, 0, sizeof(float) * D);
    }
    /* weighted sum of values */
    for (int t = 0; t < L; t++) {
        const long off = (long)bt[t / bs] * blk_stride + (long)(t % bs) * tok_stride + (long)hk * D;
        for (int g = 0; g < G; g++) {
            float pr = scores[(long)g * L + t];
            if (a->is_bf16) axpy_bf16(acc + (long)g * D, pr, (const bf16 *)a->vc + off, D);
            else axpy_f32(acc + (long)g * D, pr, (const float *)a->vc + off, D);
        }
    }
    for (int g = 0; g < G; g++) {
        const int h = hk * G + g;
        for (int d = 0; d < D; d++) {
            float v = acc[(long)g * D + d];
            if (a->is_bf16) ((bf16 *)a->out)[b * a->out_stride + (long)h * D + d] = f32_to_bf16(v);
            else ((float *)a->out)[b * a->out_stride + (long)h * D + d] = v;
        }
    }
}

/* Sixteen dot products at once: lane i of the result = sum of the lanes of v[i]
 * (unpack/shuffle tree: 45 instructions instead of 16 separate horizontal sums). */
static inline __m512 reduce16(const __m512 *v) {
    __m512 a[8], b[4];
    for (int i = 0; i < 8; i++)
        a[i] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]), _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]));
    for (int i = 0; i < 4; i++) {
        __m512d x = _mm512_castps_pd(a[2 * i]), y = _mm512_castps_pd(a[2 * i + 1]);
        b[i] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(x, y)), _mm512_castpd_ps(_mm512_unpackhi_pd(x, y)));
    }
    __m512 d0 = _mm512_add_ps(_mm512_shuffle_f32x4(b[0], b[1], 0x88), _mm512_shuffle_f32x4(b[0], b[1], 0xdd));
    __m512 d1 = _mm512_add_ps(_mm512_shuffle_f32x4(b[2], b[3], 0x88), _mm512_shuffle_f32x4(b[2], b[3], 0xdd));
    return _mm512_add_ps(_mm512_shuffle_f32x4(d0, d1, 0x88), _mm512_shuffle_f32x4(d0, d1, 0xdd));
}

static inline __m512 load_kv(const void *base, long off, int is_bf16) {
    return is_bf16 ? load_bf16_f32((const bf16 *)base + off) : _mm512_loadu_ps((const float *)base + off);
}

/* Pull the rows of tokens [t, t + cnt) of the heads at head_off (span bytes each) into L1 in
 * address order just before they are used (tasks of one KV head, whose rows are not whole; tasks
 * of whole rows prefetch the next chunk while they work, see next_chunk_lines). Measured here (a 660 MB cache, 2 MiB pages): the
 * per-head pass that follows reads 256 of every 768 bytes and draws 12 GB/s from memory alone,
 * 21 GB/s after this sweep with 128-token blocks; prefetching further ahead was slower. */
static inline void sweep_rows(const void *cache, long base, int cnt, long tok_stride, int span, int es) {
    const char *p = (const char *)cache + base * es;
    if (span == tok_stride * es) {
        for (long off = 0; off < (long)cnt * span; off += 64) _mm_prefetch(p + off, _MM_HINT_T0);
    } else {
        for (int i = 0; i < cnt; i++)
            for (int off = 0; off < span; off += 64) _mm_prefetch(p + (long)i * tok_stride * es + off, _MM_HINT_T0);
    }
}

/* The lines of the chunk that starts at token t (at most 16 tokens, within one block) when a
 * task reads whole token rows (span == a row): the kernels spread prefetches of them over the
 * work on the current chunk, a few per row, so memory streams while they compute. Issued all at
 * once (sweep_rows) a burst of 192 prefetches fills the miss buffers and stalls the core: W1-like
 * decode (64 sequences of ~224 tokens, fp32, 3 KV heads) took 1.6 ms a layer that way and 1.07
 * ms spread (memory alone reads it in 0.5-0.8). NULL when there is no next chunk or the rows are
 * not whole (then the caller sweeps the current chunk). Prefetching two or three chunks ahead
 * measured no better. */
static inline int chunk_len(int t, int L, int bs) {
    const int in_blk = t % bs, n = bs - in_blk < 16 ? bs - in_blk : 16;
    return L - t < n ? L - t : n;
}

static inline const char *next_chunk_lines(const void *cache, const int32_t *bt, int t, int L, int bs,
                                           long blk_stride, long tok_stride, long head_off, int span, int es,
                                           int *lines) {
    *lines = 0;
    if (t >= L || span != tok_stride * es) return NULL;
    *lines = (int)(((long)chunk_len(t, L, bs) * span + 63) / 64);
    return (const char *)cache + ((long)bt[t / bs] * blk_stride + (long)(t % bs) * tok_stride + head_off) * es;
}

/* The chunk of tokens [t, t + cnt) of one sequence (cnt <= 16, within one block, rows from
 * element base), with the next chunk's lines to prefetch while it is worked on; when there are
 * none to spread (no next chunk, or rows that are not whole) the current chunk is swept in now. */
typedef struct {
    int cnt, pf_lines;
    long base;
    const char *pf;
} kv_chunk;

static inline kv_chunk chunk_at(const void *cache, const int32_t *bt, int t, int L, int bs, long blk_stride,
                                long tok_stride, long head_off, int span, int es) {
    kv_chunk c = {.cnt = chunk_len(t, L, bs), .base = (long)bt[t / bs] * blk_stride + (long)(t % bs) * tok_stride};
    c.pf = next_chunk_lines(cache, bt, t + c.cnt, L, bs, blk_stride, tok_stride, head_off, span, es, &c.pf_lines);
    if (!c.pf) sweep_rows(cache, c.base + head_off, c.cnt, tok_stride, span, es);
    return c;
}

/* Head h's share of the chunk's prefetches when nh heads work on it in turn: *n lines from the
 * returned address (NULL: nothing to prefetch). */
static inline const char *prefetch_share(const kv_chunk *c, int h, int nh, int *n) {
    const int per = (c->pf_lines + nh - 1) / nh, lo = h * per, left = c->pf_lines - lo;
    *n = left < per ? (left > 0 ? left : 0) : per;
    return c->pf ? c->pf + 64L * lo : NULL;
}

/* Scores of G query heads (scaled, float32 in q) against cnt <= 16 keys of one head starting at
 * k + base (rows tok_stride apart); D16 is a compile-time constant in the specialised copies. */
static inline __attribute__((always_inline)) void score16(
    const int D16, const float *q, int G, const void *k, long base, long tok_stride, int cnt, int is_bf16,
    float *scores, long ld_scores, const char *pf, int pf_lines) {
    const __mmask16 m = (__mmask16)((1u << cnt) - 1);
    const int per_row = (pf_lines + 16 * G - 1) / (16 * G);  /* pf_lines prefetches over 16 * G rows */
    int pi = 0;
    for (int g = 0; g < G; g++) {
        __m512 qv[16];
        for (int c = 0; c < D16; c++) qv[c] = _mm512_loadu_ps(q + (long)g * D16 * 16 + 16 * c);
        /* sixteen independent chains (rows past cnt repeat the last one and are masked off at the
         * store), so the FMAs overlap instead of waiting on one accumulator */
        __m512 acc[16];
#pragma GCC unroll 16
        for (int i = 0; i < 16; i++) {
            const long row = base + (i < cnt ? i : cnt - 1) * tok_stride;
            for (int r = 0; r < per_row && pi < pf_lines; r++, pi++) _mm_prefetch(pf + 64L * pi, _MM_HINT_T0);
            acc[i] = _mm512_mul_ps(qv[0], load_kv(k, row, is_bf16));
#pragma GCC unroll 16
            for (int c = 1; c < D16; c++) acc[i] = _mm512_fmadd_ps(qv[c], load_kv(k, row + 16 * c, is_bf16), acc[i]);
        }
        _mm512_mask_storeu_ps(scores + g * ld_scores, m, reduce16(acc));
    }
}

/* o[g] += sum_i p[g][i] * v[i] for G query heads over cnt values of one head at v + base. When
 * the group's accumulators fit in registers (GC = G, compile-time, G * D16 <= 16) each value row
 * is loaded once for all G heads; otherwise head by head. */
static inline __attribute__((always_inline)) void accumulate_values(
    const int D16, const int GC, float *o, int G, const float *p, long ld_p, const void *v, long base,
    long tok_stride, int cnt, const int is_bf16, const char *pf, int pf_lines) {
    const int per_row = (pf_lines + cnt - 1) / cnt;  /* pf_lines prefetches over the cnt value rows */
    int pi = 0;
    if (GC > 0) {
        __m512 acc[4][16];
        for (int g = 0; g < GC; g++)
            for (int c = 0; c < D16; c++) acc[g][c] = _mm512_loadu_ps(o + (long)(g * D16 + c) * 16);
        for (int i = 0; i < cnt; i++) {
            for (int r = 0; r < per_row && pi < pf_lines; r++, pi++) _mm_prefetch(pf + 64L * pi, _MM_HINT_T0);
            __m512 vv[16];
            for (int c = 0; c < D16; c++) vv[c] = load_kv(v, base + i * tok_stride + 16 * c, is_bf16);
            for (int g = 0; g < GC; g++) {
                const __m512 pv = _mm512_set1_ps(p[g * ld_p + i]);
                for (int c = 0; c < D16; c++) acc[g][c] = _mm512_fmadd_ps(pv, vv[c], acc[g][c]);
            }
        }
        for (int g = 0; g < GC; g++)
            for (int c = 0; c < D16; c++) _mm512_storeu_ps(o + (long)(g * D16 + c) * 16, acc[g][c]);
        return;
    }
    for (int g = 0; g < G; g++) {
        __m512 acc[16];
        float *og = o + (long)g * D16 * 16;
        for (int c = 0; c < D16; c++) acc[c] = _mm512_loadu_ps(og + 16 * c);
        for (int i = 0; i < cnt; i++) {
            if (g == 0)
                for (int r = 0; r < per_row && pi < pf_lines; r++, pi++) _mm_prefetch(pf + 64L * pi, _MM_HINT_T0);
            const __m512 pv = _mm512_set1_ps(p[g * ld_p + i]);
            for (int c = 0; c < D16; c++)
                acc[c] = _mm512_fmadd_ps(pv, load_kv(v, base + i * tok_stride + 16 * c, is_bf16), acc[c]);
        }
        for (int c = 0; c < D16; c++) _mm512_storeu_ps(og + 16 * c, acc[c]);
    }
}

/* The same as decode_attn_task for head sizes that are a multiple of 16 (at most 256). A task is
 * a sequence and a range of its KV heads (every head when the batch alone fills the pool: a
 * block's rows are then read as one contiguous stream). Keys, then values, are read from memory
 * once, sixteen tokens at a time, and every query head of each KV head uses them while they sit
 * in L1; scores for all heads live in scratch, the output accumulators too. */
static inline __attribute__((always_inline)) void decode_attn_heads(const int D16, const int GC, const int is_bf16,
                                                                    const attn_args *a, int b,
                                                                    int hk0, int hk1) {
    const int G = a->Hq / a->Hk, D = 16 * D16, bs = a->block_size;
    const int L = a->seq_lens[b], nh = hk1 - hk0, es = is_bf16 ? 2 : 4;
    const int32_t *bt = a->block_tables + (long)b * a->max_blocks;
    const long tok_stride = (long)a->Hk * D, blk_stride = (long)bs * tok_stride, head_off = (long)hk0 * D;
    const long Lp = (L + 15) & ~15;
    float *scores = scratch((size_t)nh * G * Lp + 2 * (size_t)nh * G * D + 16);
    float *qf = scores + (size_t)nh * G * Lp, *o = qf + (size_t)nh * G * D;
    const __m512 sc = _mm512_set1_ps(a->scale);
    for (int j = 0; j < nh * G; j++) {
        const long qoff = b * a->q_stride + (long)(hk0 * G + j) * D;
        for (int c = 0; c < D16; c++) {
            _mm512_storeu_ps(qf + (long)j * D + 16 * c, _mm512_mul_ps(load_kv(a->q, qoff + 16 * c, is_bf16), sc));
            _mm512_storeu_ps(o + (long)j * D + 16 * c, _mm512_setzero_ps());
        }
    }
    const int span = nh * D * es;
    for (int t0 = 0; t0 < L;) {
        const kv_chunk c = chunk_at(a->kc, bt, t0, L, bs, blk_stride, tok_stride, head_off, span, es);
        for (int h = 0; h < nh; h++) {
            int n_pf;
            const char *pf = prefetch_share(&c, h, nh, &n_pf);
            score16(D16, qf + (long)h * G * D, G, a->kc, c.base + (long)(hk0 + h) * D, tok_stride, c.cnt, is_bf16,
                    scores + (long)h * G * Lp + t0, Lp, pf, n_pf);
        }
        t0 += c.cnt;
    }
    /* softmax of each query head's scores (normalised at the end) */
    float inv[64 * 16];
    for (int j = 0; j < nh * G; j++) {
        float *s = scores + (long)j * Lp;
        __m512 mx = _mm512_set1_ps(-INFINITY);
        for (int t = 0; t < L; t += 16) {
            const __mmask16 m = L - t >= 16 ? 0xffff : (__mmask16)((1u << (L - t)) - 1);
            mx = _mm512_mask_max_ps(mx, m, mx, _mm512_maskz_loadu_ps(m, s + t));
        }
        const __m512 mv = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
        __m512 sum = _mm512_setzero_ps();
        for (int t = 0; t < L; t += 16) {
            const __mmask16 m = L - t >= 16 ? 0xffff : (__mmask16)((1u << (L - t)) - 1);
            __m512 e = _mm512_maskz_mov_ps(m, exp_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, s + t), mv)));
            _mm512_mask_storeu_ps(s + t, m, e);
            sum = _mm512_add_ps(sum, e);
        }
        inv[j] = 1.0f / hsum(sum);
    }
    for (int t0 = 0; t0 < L;) {
        const kv_chunk c = chunk_at(a->vc, bt, t0, L, bs, blk_stride, tok_stride, head_off, span, es);
        for (int h = 0; h < nh; h++) {
            int n_pf;
            const char *pf = prefetch_share(&c, h, nh, &n_pf);
            accumulate_values(D16, GC, o + (long)h * G * D, G, scores + (long)h * G * Lp + t0, Lp, a->vc,
                              c.base + (long)(hk0 + h) * D, tok_stride, c.cnt, is_bf16, pf, n_pf);
        }
        t0 += c.cnt;
    }
    for (int j = 0; j < nh * G; j++) {
        const long ooff = b * a->out_stride + (long)(hk0 * G + j) * D;
        const __m512 iv = _mm512_set1_ps(inv[j]);
        for (int c = 0; c < D16; c++) {
            __m512 r = _mm512_mul_ps(_mm512_loadu_ps(o + (long)j * D + 16 * c), iv);
            if (is_bf16) _mm256_storeu_si256((__m256i *)((bf16 *)a->out + ooff + 16 * c), f32_to_bf16x16(r));
            else _mm512_storeu_ps((float *)a->out + ooff + 16 * c, r);
        }
    }
}

static void decode_attn_task_d16(void *p, int chunk) {
    const attn_args *a = p;
    int b = chunk, hk0 = 0, hk1 = a->Hk;
    if (a->heads_per_task == 1) { b = chunk / a->Hk; hk0 = chunk % a->Hk; hk1 = hk0 + 1; }
    const int G = a->Hq / a->Hk, bf = a->is_bf16;
    /* specialised for head sizes 64 and 128, the dtype, and groups whose accumulators fit */
#define DA_G(D16, BF)                                                                                \
    switch (G * D16 <= 16 ? G : 0) {                                                                 \
    case 1: decode_attn_heads(D16, 1, BF, a, b, hk0, hk1); break;                                    \
    case 2: decode_attn_heads(D16, 2, BF, a, b, hk0, hk1); break;                                    \
    case 3: decode_attn_heads(D16, 3, BF, a, b, hk0, hk1); break;                                    \
    case 4: decode_attn_heads(D16, 4, BF, a, b, hk0, hk1); break;                                    \
    default: decode_attn_heads(D16, 0, BF, a, b, hk0, hk1); break;                                   \
    }
    if (a->D == 64) { if (bf) { DA_G(4, 1) } else { DA_G(4, 0) } }
    else if (a->D == 128) { if (bf) { DA_G(8, 1) } else { DA_G(8, 0) } }
    else decode_attn_heads(a->D / 16, 0, bf, a, b, hk0, hk1);
#undef DA_G
}

void vc_decode_attention(const void *q, long q_stride, const void *kc, const void *vc,
                         const int32_t *block_tables, int max_blocks, const int32_t *seq_lens,
                         void *out, long out_stride, int B, int Hq, int Hk, int D, int block_size,
                         float scale, int is_bf16) {
    attn_args a = {q, kc, vc, block_tables, seq_lens, out, B, Hq, Hk, D, block_size, max_blocks,
                   is_bf16, q_stride, out_stride, scale, 1};
    if (D % 16 == 0 && D <= 256 && Hq / Hk <= 64 && Hq <= 64 * 16) {
        /* whole sequences per task once the batch gives every thread several of them */
        const int whole = B >= 4 * vc_pool_size();
        a.heads_per_task = whole ? Hk : 1;
        parallel_for(decode_attn_task_d16, &a, whole ? B : B * Hk);
    } else {
        parallel_for(decode_attn_task, &a, B * Hk);
    }
}

/* ------------------------------------------------------------------ fused elementwise ops */
/* Each op is a serial loop over rows [t0, t1); the exported wrappers split batches of more than
 * 2 * ROW_CHUNK rows (prefills) over the pool and run decode-sized batches inline. */

#define ROW_CHUNK 32

static void rms_norm_rows(const void *x, long ldx, void *residual, const void *w, void *out, int H,
                          float eps, int is_bf16, int t0, int t1) {
    const int hfull = H & ~15;
    const __mmask16 tail = (__mmask16)((1u << (H - hfull)) - 1);
    for (int t = t0; t < t1; t++) {
        __m512 ss = _mm512_setzero_ps();
        if (is_bf16) {
            const bf16 *xr = (const bf16 *)x + (long)t * ldx;
            bf16 *rr = residual ? (bf16 *)residual + (long)t * H : NULL;
            bf16 *o = (bf16 *)out + (long)t * H;
            /* pass 1: sum (stored in residual) and squares */
            for (int h = 0; h < H; h += 16) {
                __mmask16 m = h < hfull ? 0xffff : tail;
                __m512 v = load_bf16_f32_mask(xr + h, m);
                if (rr) {
                    v = round_bf16_ps(_mm512_add_ps(v, load_bf16_f32_mask(rr + h, m)));
                    _mm256_mask_storeu_epi16(rr + h, m, f32_to_bf16x16(v));
                }
                ss = _mm512_fmadd_ps(v, v, ss);
            }
            const float r = 1.0f / sqrtf(hsum(ss) / H + eps);
            const __m512 rv = _mm512_set1_ps(r);
            const bf16 *src = rr ? rr : xr;
            for (int h = 0; h < H; h += 16) {
                __mmask16 m = h < hfull ? 0xffff : tail;
                __m512 n = round_bf16_ps(_mm512_mul_ps(load_bf16_f32_mask(src + h, m), rv));
                __m512 v = _mm512_mul_ps(load_bf16_f32_mask((const bf16 *)w + h, m), n);
                _mm256_mask_storeu_epi16(o + h, m, f32_to_bf16x16(v));
            }
        } else {
            const float *xr = (const float *)x + (long)t * ldx;
            float *rr = residual ? (float *)residual + (long)t * H : NULL;
            float *o = (float *)out + (long)t * H;
            for (int h = 0; h < H; h += 16) {
                __mmask16 m = h < hfull ? 0xffff : tail;
                __m512 v = _mm512_maskz_loadu_ps(m, xr + h);
                if (rr) {
                    v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, rr + h));
                    _mm512_mask_storeu_ps(rr + h, m, v);
                }
                ss = _mm512_fmadd_ps(v, v, ss);
            }
            const float r = 1.0f / sqrtf(hsum(ss) / H + eps);
            const __m512 rv = _mm512_set1_ps(r);
            const float *src = rr ? rr : xr;
            for (int h = 0; h < H; h += 16) {
                __mmask16 m = h < hfull ? 0xffff : tail;
                __m512 n = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, src + h), rv);
                _mm512_mask_storeu_ps(o + h, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, (const float *)w + h), n));
            }
        }
    }
}

static void rotary_rows(void *q, long ld_q, void *k, long ld_k, int Hq, int Hk, int D,
                        const int64_t *positions, const float *cos_sin, int is_bf16, int t0, int t1) {
    const int half = D / 2;
    for (int t = t0; t < t1; t++) {
        const float *cs = cos_sin + positions[t] * D;
        for (int which = 0; which < 2; which++) {
            const int H = which ? Hk : Hq;
            const long row = (long)t * (which ? ld_k : ld_q);
            for (int h = 0; h < H; h++) {
                const long off = row + (long)h * D;
                for (int d = 0; d < half; d += 16) {
                    const int n = half - d < 16 ? half - d : 16;
                    const __mmask16 m = (__mmask16)((1u << n) - 1);
                    __m512 c = _mm512_maskz_loadu_ps(m, cs + d), s = _mm512_maskz_loadu_ps(m, cs + half + d);
                    /* products rounded before the sum, as the native op (built with
                     * -ffp-contract=off, so no FMA contraction either) */
                    if (is_bf16) {
                        bf16 *p = (bf16 *)(which ? k : q) + off;
                        __m512 x1 = load_bf16_f32_mask(p + d, m), x2 = load_bf16_f32_mask(p + half + d, m);
                        __m512 o1 = _mm512_sub_ps(_mm512_mul_ps(x1, c), _mm512_mul_ps(x2, s));
                        __m512 o2 = _mm512_add_ps(_mm512_mul_ps(x2, c), _mm512_mul_ps(x1, s));
                        _mm256_mask_storeu_epi16(p + d, m, f32_to_bf16x16(o1));
                        _mm256_mask_storeu_epi16(p + half + d, m, f32_to_bf16x16(o2));
                    } else {
                        float *p = (float *)(which ? k : q) + off;
                        __m512 x1 = _mm512_maskz_loadu_ps(m, p + d), x2 = _mm512_maskz_loadu_ps(m, p + half + d);
                        __m512 o1 = _mm512_sub_ps(_mm512_mul_ps(x1, c), _mm512_mul_ps(x2, s));
                        __m512 o2 = _mm512_add_ps(_mm512_mul_ps(x2, c), _mm512_mul_ps(x1, s));
                        _mm512_mask_storeu_ps(p + d, m, o1);
                        _mm512_mask_storeu_ps(p + half + d, m, o2);
                    }
                }
            }
        }
    }
}

static void cache_write_rows(const char *k, long ld_k, const char *v, long ld_v, char *kc, char *vc,
                             const int64_t *slot_mapping, long row_bytes, int t0, int t1) {
    for (int t = t0; t < t1; t++) {
        const int64_t slot = slot_mapping[t];
        if (slot < 0) continue;
        memcpy(kc + slot * row_bytes, k + t * ld_k, row_bytes);
        memcpy(vc + slot * row_bytes, v + t * ld_v, row_bytes);
    }
}

static void silu_and_mul_rows(const void *x, void *out, int d, int is_bf16, int t0, int t1) {
    const __m512 one = _mm512_set1_ps(1.0f);
    for (int t = t0; t < t1; t++) {
        for (int j = 0; j < d; j += 16) {
            const int n = d - j < 16 ? d - j : 16;
            const __mmask16 m = (__mmask16)((1u << n) - 1);
            __m512 g, u;
            if (is_bf16) {
                const bf16 *xr = (const bf16 *)x + (long)t * 2 * d;
                g = load_bf16_f32_mask(xr + j, m);
                u = load_bf16_f32_mask(xr + d + j, m);
            } else {
                const float *xr = (const float *)x + (long)t * 2 * d;
                g = _mm512_maskz_loadu_ps(m, xr + j);
                u = _mm512_maskz_loadu_ps(m, xr + d + j);
            }
            __m512 sg = _mm512_div_ps(g, _mm512_add_ps(one, exp_ps(_mm512_sub_ps(_mm512_setzero_ps(), g))));
            if (is_bf16) {
                __m512 o = _mm512_mul_ps(round_bf16_ps(sg), u);
                _mm256_mask_storeu_epi16((bf16 *)out + (long)t * d + j, m, f32_to_bf16x16(o));
            } else {
                _mm512_mask_storeu_ps((float *)out + (long)t * d + j, m, _mm512_mul_ps(sg, u));
            }
        }
    }
}

/* the exported elementwise ops: row chunks over the pool */

typedef struct {
    int op, T;
    const void *x, *w, *positions, *cos_sin, *slots;
    void *y, *z, *out, *kc, *vc;
    long ld0, ld1, row_bytes;
    int H, Hq, Hk, D, is_bf16;
    float eps;
} rows_args;

enum { OP_RMS, OP_ROTARY, OP_CACHE, OP_SILU, OP_HEAD_RMS };

static void rows_task(void *p, int chunk) {
    const rows_args *a = p;
    const int t0 = chunk * ROW_CHUNK, t1 = t0 + ROW_CHUNK < a->T ? t0 + ROW_CHUNK : a->T;
    switch (a->op) {
    case OP_RMS: rms_norm_rows(a->x, a->ld0, a->y, a->w, a->out, a->H, a->eps, a->is_bf16, t0, t1); break;
    case OP_ROTARY:
        rotary_rows(a->y, a->ld0, a->z, a->ld1, a->Hq, a->Hk, a->D, a->positions, a->cos_sin, a->is_bf16, t0, t1);
        break;
    case OP_CACHE:
        cache_write_rows(a->x, a->ld0, a->w, a->ld1, a->kc, a->vc, a->slots, a->row_bytes, t0, t1);
        break;
    case OP_SILU: silu_and_mul_rows(a->x, a->out, a->H, a->is_bf16, t0, t1); break;
    case OP_HEAD_RMS: {
        const int es = a->is_bf16 ? 2 : 4;
        for (int t = t0; t < t1; t++)
            rms_norm_rows((const char *)a->x + (size_t)t * a->ld0 * es, a->D, NULL, a->w,
                          (char *)a->out + (size_t)t * a->Hq * a->D * es, a->D, a->eps, a->is_bf16, 0, a->Hq);
        break;
    }
    }
}

static void run_rows(rows_args *a) {
    const int n_chunks = (a->T + ROW_CHUNK - 1) / ROW_CHUNK;
    if (a->T < 2 * ROW_CHUNK) {
        for (int c = 0; c < n_chunks; c++) rows_task(a, c);
        return;
    }
    parallel_for(rows_task, a, n_chunks);
}

/* out = rms_norm(x) * w; with residual: residual = x + residual (in the model dtype) first and
 * the norm reads it. Native rounding points: sum rounded to dtype, normalised value rounded to
 * dtype, then times the weight in dtype. */
void vc_rms_norm(const void *x, long ldx, void *residual, const void *w, void *out, int T, int H,
                 float eps, int is_bf16) {
    rows_args a = {.op = OP_RMS, .T = T, .x = x, .w = w, .y = residual, .out = out, .ld0 = ldx, .H = H,
                   .eps = eps, .is_bf16 = is_bf16};
    run_rows(&a);
}

/* Per-head RMSNorm (Qwen3's q/k norm): x [T, Hh, D] with rows ld_x elements apart and heads
 * contiguous -> out [T, Hh, D] contiguous; w [D]. Same rounding points as vc_rms_norm. */
void vc_head_rms_norm(const void *x, long ld_x, const void *w, void *out, int T, int Hh, int D, float eps,
                      int is_bf16) {
    rows_args a = {.op = OP_HEAD_RMS, .T = T, .x = x, .w = w, .out = out, .ld0 = ld_x, .Hq = Hh, .D = D,
                   .eps = eps, .is_bf16 = is_bf16};
    run_rows(&a);
}

/* Neox rotary, in place, on q [T, Hq, D] and k [T, Hk, D] whose rows are ld_q / ld_k elements
 * apart (views of the fused QKV projection). cos_sin: [P, D] float32, cos | sin. */
void vc_rotary(void *q, long ld_q, void *k, long ld_k, int T, int Hq, int Hk, int D,
               const int64_t *positions, const float *cos_sin, int is_bf16) {
    rows_args a = {.op = OP_ROTARY, .T = T, .y = q, .z = k, .ld0 = ld_q, .ld1 = ld_k, .Hq = Hq, .Hk = Hk,
                   .D = D, .positions = positions, .cos_sin = cos_sin, .is_bf16 = is_bf16};
    run_rows(&a);
}

/* Copy key/value rows (row_bytes each, ld_k / ld_v bytes apart) into the paged caches at
 * slot_mapping; slot < 0 skips the row. */
void vc_cache_write(const char *k, long ld_k, const char *v, long ld_v, char *kc, char *vc,
                    const int64_t *slot_mapping, int T, long row_bytes) {
    rows_args a = {.op = OP_CACHE, .T = T, .x = k, .w = v, .ld0 = ld_k, .ld1 = ld_v, .kc = kc, .vc = vc,
                   .slots = slot_mapping, .row_bytes = row_bytes};
    run_rows(&a);
}

/* out[T, d] = silu(x[:, :d]) * x[:, d:] (silu rounded to dtype first, as F.silu(.) * up). */
void vc_silu_and_mul(const void *x, void *out, int T, int d, int is_bf16) {
    rows_args a = {.op = OP_SILU, .T = T, .x = x, .out = out, .H = d, .is_bf16 = is_bf16};
    run_rows(&a);
}

/* ------------------------------------------------------------------------ gated MLP (SwiGLU) */
/* y[M, H] = (silu(g) * u) @ w_down^T (+ bias_down), g | u = x @ w_gate_up^T (+ bias_gu), both
 * weights packed. Rows go through in tiles of `tile` rows, so the [tile, 2I] intermediate and the
 * [tile, I] product live in `scratch` (tile * 3I elements of the dtype) and stay in cache: a
 * prefill's [T, 2I] projection (100 MB at T = 8192 for SmolLM2 in float32) is never written to
 * memory nor allocated. Same kernels, same rounding points as the three separate ops. */
void vc_silu_mlp(const void *x, long ldx, const void *wp_gu, const void *bias_gu, const void *wp_down,
                 const void *bias_down, void *y, long ldy, int M, int H, int I, int is_bf16,
                 void *scratch_buf, int tile) {
    const int es = is_bf16 ? 2 : 4;
    char *gu = scratch_buf, *act = (char *)scratch_buf + (size_t)tile * 2 * I * es;
    for (int m0 = 0; m0 < M; m0 += tile) {
        const int r = M - m0 < tile ? M - m0 : tile;
        vc_linear_packed((const char *)x + (size_t)m0 * ldx * es, ldx, wp_gu, bias_gu, gu, 2L * I, r, 2 * I, H,
                         is_bf16);
        vc_silu_and_mul(gu, act, r, I, is_bf16);
        vc_linear_packed(act, I, wp_down, bias_down, (char *)y + (size_t)m0 * ldy * es, ldy, r, H, I, is_bf16);
    }
}

/* ------------------------------------------------------------------------------- argmax */
/* out[r] = the first index of the largest value of row r (torch.argmax's choice on ties), -1 for
 * a row holding a NaN (the caller asks PyTorch for those). One row per chunk. */
typedef struct {
    const float *x;
    long ld;
    int V;
    int64_t *out;
} argmax_args;

static void argmax_task(void *p, int r) {
    const argmax_args *a = p;
    const float *row = a->x + (long)r * a->ld;
    __m512 best = _mm512_set1_ps(-INFINITY);
    __m512i bidx = _mm512_setzero_si512(), idx = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512i step = _mm512_set1_epi32(16);
    __mmask16 nan = 0;
    int j = 0;
    for (; j + 16 <= a->V; j += 16) {
        const __m512 v = _mm512_loadu_ps(row + j);
        const __mmask16 gt = _mm512_cmp_ps_mask(v, best, _CMP_GT_OQ);
        nan |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
        best = _mm512_mask_mov_ps(best, gt, v);
        bidx = _mm512_mask_mov_epi32(bidx, gt, idx);
        idx = _mm512_add_epi32(idx, step);
    }
    if (j < a->V) {
        const __mmask16 m = (__mmask16)((1u << (a->V - j)) - 1);
        const __m512 v = _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), m, row + j);
        const __mmask16 gt = _mm512_mask_cmp_ps_mask(m, v, best, _CMP_GT_OQ);
        nan |= _mm512_mask_cmp_ps_mask(m, v, v, _CMP_UNORD_Q);
        best = _mm512_mask_mov_ps(best, gt, v);
        bidx = _mm512_mask_mov_epi32(bidx, gt, idx);
    }
    if (nan) { a->out[r] = -1; return; }
    const float top = _mm512_reduce_max_ps(best);
    const __mmask16 at_top = _mm512_cmp_ps_mask(best, _mm512_set1_ps(top), _CMP_EQ_OQ);
    /* lanes never updated hold index 0 with -inf: only chosen when the whole row is -inf */
    a->out[r] = at_top ? _mm512_mask_reduce_min_epi32(at_top, bidx) : 0;
}

void vc_argmax_rows(const float *x, long ld, int R, int V, int64_t *out) {
    argmax_args a = {x, ld, V, out};
    if (R == 1) { argmax_task(&a, 0); return; }
    parallel_for(argmax_task, &a, R);
}

/* ------------------------------------------------------------------------------ LoRA (BGMV) */
/* The batched LoRA op (Ops.add_lora): for every row t whose slot l = slots[t] is in [0, L),
 *   out[t, slice s] += scaling[l] * (x[t] @ A[s, l]^T) @ B[l][:, slice s]
 * A: [S, L, R, K] and B: [L, R, N] (B transposed, the slices side by side: n0 columns, then n1,
 * then the rest), contiguous, in the model dtype. A row costs its own adapter's FLOPs and nothing
 * else (base rows and the other slots are skipped), and the slots are read when the call runs, so
 * a recorded plan holding this call serves any mix of adapters. The shrink is rounded to the
 * dtype (as a matmul's output is), the expand accumulates in float32 and the sum is rounded once.
 * The rows are grouped by slot and a chunk of the pool is up to LORA_ROWS rows of one adapter,
 * which share each load of A and B (the op is bound by those loads, from L2, not by its FMAs). */
#define LORA_ROWS 4
#define LORA_MAX_RANK 512
typedef struct {
    const void *x, *a, *b;
    const int64_t *slots;
    const float *scaling;
    void *out;
    long ldx, ldo;
    int T, K, R, L, N, S, is_bf16;
    int off[4];
    const int32_t *order;       /* the adapter rows, grouped by slot */
    const int32_t *chunk_start; /* chunk c: order[chunk_start[c] .. chunk_start[c + 1]) */
} lora_args;

static inline __m512 load16(const void *p, long i, __mmask16 m, int is_bf16) {
    return is_bf16 ? load_bf16_f32_mask((const bf16 *)p + i, m) : _mm512_maskz_loadu_ps(m, (const float *)p + i);
}

static inline __mmask16 mask_upto(long n) { return n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1); }

/* h[i][r] = x_row(i) . A_r for G rows of one adapter (G <= LORA_ROWS), 4 ranks per pass over x:
 * each A vector loaded once for the G rows. Per row the sums are those of one row alone. */
static inline __attribute__((always_inline)) void lora_shrink(
    const int G, const void *x, const long *xi, const void *a, long ai, int K, int R, int bf, float (*h)[LORA_MAX_RANK]) {
    int r = 0;
    for (; r + 4 <= R; r += 4) {
        __m512 acc[LORA_ROWS][4];
        for (int g = 0; g < G; g++) acc[g][0] = acc[g][1] = acc[g][2] = acc[g][3] = _mm512_setzero_ps();
        for (int k = 0; k < K; k += 16) {
            const __mmask16 m = mask_upto(K - k);
            const long ak = ai + (long)r * K + k;
            const __m512 a0 = load16(a, ak, m, bf), a1 = load16(a, ak + K, m, bf);
            const __m512 a2 = load16(a, ak + 2L * K, m, bf), a3 = load16(a, ak + 3L * K, m, bf);
            for (int g = 0; g < G; g++) {
                const __m512 xv = load16(x, xi[g] + k, m, bf);
                acc[g][0] = _mm512_fmadd_ps(xv, a0, acc[g][0]);
                acc[g][1] = _mm512_fmadd_ps(xv, a1, acc[g][1]);
                acc[g][2] = _mm512_fmadd_ps(xv, a2, acc[g][2]);
                acc[g][3] = _mm512_fmadd_ps(xv, a3, acc[g][3]);
            }
        }
        for (int g = 0; g < G; g++)
            h[g][r] = hsum(acc[g][0]), h[g][r + 1] = hsum(acc[g][1]), h[g][r + 2] = hsum(acc[g][2]),
            h[g][r + 3] = hsum(acc[g][3]);
    }
    for (; r < R; r++) {
        for (int g = 0; g < G; g++) {
            __m512 acc = _mm512_setzero_ps();
            for (int k = 0; k < K; k += 16) {
                const __mmask16 m = mask_upto(K - k);
                acc = _mm512_fmadd_ps(load16(x, xi[g] + k, m, bf), load16(a, ai + (long)r * K + k, m, bf), acc);
            }
            h[g][r] = hsum(acc);
        }
    }
    if (bf)
        for (int g = 0; g < G; g++)
            for (r = 0; r < R; r++) h[g][r] = round_bf16(h[g][r]);
}

/* out_row(i)[j0 .. j1) += sc * h[i] @ B_rows (R rows, N elements apart) for G rows of one adapter,
 * 32 columns at a time: each B vector loaded once for the G rows. A rank whose h is zero in
 * every row (the zero-padded ranks of a lower-rank adapter) is skipped. */
static inline __attribute__((always_inline)) void lora_expand(
    const int G, float (*h)[LORA_MAX_RANK], const void *b, long bi, long N, int R, int j0, int j1, float sc,
    void *out, const long *oi, int bf) {
    const __m512 scv = _mm512_set1_ps(sc);
    for (int j = j0; j < j1; j += 32) {
        const __mmask16 m0 = mask_upto(j1 - j), m1 = j + 16 < j1 ? mask_upto(j1 - j - 16) : 0;
        __m512 acc[LORA_ROWS][2];
        for (int g = 0; g < G; g++) acc[g][0] = acc[g][1] = _mm512_setzero_ps();
        for (int r = 0; r < R; r++) {
            int any = 0;
            for (int g = 0; g < G; g++) any |= h[g][r] != 0.0f;
            if (!any) continue;
            const long br = bi + (long)r * N + j;
            const __m512 b0 = load16(b, br, m0, bf), b1 = m1 ? load16(b, br + 16, m1, bf) : _mm512_setzero_ps();
            for (int g = 0; g < G; g++) {
                const __m512 hr = _mm512_set1_ps(h[g][r]);
                acc[g][0] = _mm512_fmadd_ps(hr, b0, acc[g][0]);
                acc[g][1] = _mm512_fmadd_ps(hr, b1, acc[g][1]);
            }
        }
        for (int g = 0; g < G; g++)
            for (int v = 0; v < 2; v++) {
                const __mmask16 mv = v ? m1 : m0;
                if (!mv) continue;
                const long o = oi[g] + j + 16 * v;
                const __m512 sum = _mm512_add_ps(load16(out, o, mv, bf), _mm512_mul_ps(scv, acc[g][v]));
                if (bf) _mm256_mask_storeu_epi16((bf16 *)out + o, mv, f32_to_bf16x16(sum));
                else _mm512_mask_storeu_ps((float *)out + o, mv, sum);
            }
    }
}

static inline __attribute__((always_inline)) void lora_rows(const int G, const lora_args *a, const int32_t *rows) {
    const int64_t l = a->slots[rows[0]];
    float h[LORA_ROWS][LORA_MAX_RANK];
    long xi[LORA_ROWS], oi[LORA_ROWS];
    for (int g = 0; g < G; g++) xi[g] = (long)rows[g] * a->ldx, oi[g] = (long)rows[g] * a->ldo;
    for (int s = 0; s < a->S; s++) {
        lora_shrink(G, a->x, xi, a->a, ((long)s * a->L + l) * a->R * a->K, a->K, a->R, a->is_bf16, h);
        lora_expand(G, h, a->b, l * a->R * (long)a->N, a->N, a->R, a->off[s], a->off[s + 1], a->scaling[l], a->out,
                    oi, a->is_bf16);
    }
}

/* a chunk: up to LORA_ROWS rows of one adapter (the rows sorted by slot, a->order) */
static void lora_task(void *p, int chunk) {
    const lora_args *a = p;
    const int32_t *rows = a->order + a->chunk_start[chunk];
    switch (a->chunk_start[chunk + 1] - a->chunk_start[chunk]) {
    case 1: lora_rows(1, a, rows); break;
    case 2: lora_rows(2, a, rows); break;
    case 3: lora_rows(3, a, rows); break;
    default: lora_rows(4, a, rows); break;
    }
}

/* S (1, 2 or 3 slices) follows from the sizes: n0 == N, n0 + n1 == N, else a third of N - n0 - n1.
 * Returns -1 (nothing done) for a rank above LORA_MAX_RANK, else 0. */
int vc_lora(void *out, long ldo, const void *x, long ldx, const void *a, const void *b, const int64_t *slots,
            const float *scaling, int T, int K, int R, int L, int N, int n0, int n1, int is_bf16) {
    if (R > LORA_MAX_RANK) return -1;
    lora_args args = {.x = x, .a = a, .b = b, .slots = slots, .scaling = scaling, .out = out, .ldx = ldx,
                      .ldo = ldo, .T = T, .K = K, .R = R, .L = L, .N = N, .is_bf16 = is_bf16};
    args.S = n0 >= N ? 1 : n0 + n1 >= N ? 2 : 3;
    args.off[0] = 0, args.off[1] = n0 < N ? n0 : N, args.off[2] = n0 + n1 < N ? n0 + n1 : N, args.off[3] = N;
    /* counting sort of the adapter rows by slot, then chunks of up to LORA_ROWS rows of one slot */
    static int32_t *buf;
    static size_t cap;
    const size_t need = (size_t)2 * T + 2 + (size_t)L + 1;
    if (need > cap) {
        free(buf);
        buf = malloc(need * sizeof(int32_t));
        cap = need;
    }
    int32_t *order = buf, *chunk_start = buf + T, *count = buf + 2 * T + 2;
    memset(count, 0, (size_t)(L + 1) * sizeof(int32_t));
    for (int t = 0; t < T; t++)
        if (slots[t] >= 0 && slots[t] < L) count[slots[t] + 1]++;
    for (int l = 0; l < L; l++) count[l + 1] += count[l];
    int n_chunks = 0;
    for (int l = 0; l < L; l++)
        for (int i = count[l]; i < count[l + 1]; i += LORA_ROWS) chunk_start[n_chunks++] = i;
    chunk_start[n_chunks] = count[L];
    for (int t = 0; t < T; t++)
        if (slots[t] >= 0 && slots[t] < L) order[count[slots[t]]++] = t;
    args.order = order, args.chunk_start = chunk_start;
    if (n_chunks == 1) lora_task(&args, 0);
    else if (n_chunks > 1) parallel_for(lora_task, &args, n_chunks);
    return 0;
}

/* ---------------------------------------------------------------------------- embedding */
/* out[t] = table[ids[t]] (row_bytes each); a row whose id is outside [0, vocab) is zeroed.
 * Returns how many ids were outside (the eager caller raises for those). */
int vc_embedding(const int64_t *ids, int T, const char *table, long vocab, long row_bytes, char *out) {
    int bad = 0;
    for (int t = 0; t < T; t++) {
        const int64_t id = ids[t];
        if (id < 0 || id >= vocab) { memset(out + (size_t)t * row_bytes, 0, row_bytes); bad++; continue; }
        memcpy(out + (size_t)t * row_bytes, table + id * row_bytes, row_bytes);
    }
    return bad;
}

/* ------------------------------------------------------------------------- recorded plans */
/* A decode step recorded as the list of the calls above that it made (vllm_cpu.graph_runner),
 * replayed by one call: the Python between them (views, allocations, argument checks, ctypes)
 * is paid once, at capture. Each call's arguments are in the order of its function, as 64-bit
 * integers (pointers, sizes, flags) or doubles (eps, scale). The kinds are PLAN_KINDS' order. */
#define PLAN_MAX_ARGS 16
typedef union { int64_t i; double f; } plan_arg;
typedef struct { int64_t kind; plan_arg a[PLAN_MAX_ARGS]; } plan_call;
enum { PLAN_LINEAR, PLAN_RMS_NORM, PLAN_ROTARY, PLAN_CACHE_WRITE, PLAN_DECODE_ATTENTION, PLAN_SILU_AND_MUL,
       PLAN_SILU_MLP, PLAN_EMBEDDING, PLAN_HEAD_RMS_NORM, PLAN_LINEAR_Q, PLAN_CALLBACK, PLAN_LORA,
       PLAN_KINDS };

/* Calls fn(NULL, arg) on this thread: a plan's step of Python code (a ctypes callback, which takes
 * the GIL itself), e.g. a bf16 linear on PyTorch's oneDNN matmul where AMX makes it faster. */
void vc_callback(task_fn fn, int arg) { fn(NULL, arg); }

int vc_plan_max_args(void) { return PLAN_MAX_ARGS; }
int vc_plan_kinds(void) { return PLAN_KINDS; }

/* Runs calls[0 .. n-1]; returns -1 when all ran, else the index of a call of unknown kind (the
 * calls before it ran). */
int vc_plan_run(const plan_call *calls, int n) {
#define P(j) ((void *)(intptr_t)c->a[j].i)
#define L(j) ((long)c->a[j].i)
#define I(j) ((int)c->a[j].i)
#define F(j) ((float)c->a[j].f)
    for (int j = 0; j < n; j++) {
        const plan_call *c = calls + j;
        switch (c->kind) {
        case PLAN_LINEAR: vc_linear_packed(P(0), L(1), P(2), P(3), P(4), L(5), I(6), I(7), I(8), I(9)); break;
        case PLAN_RMS_NORM: vc_rms_norm(P(0), L(1), P(2), P(3), P(4), I(5), I(6), F(7), I(8)); break;
        case PLAN_ROTARY: vc_rotary(P(0), L(1), P(2), L(3), I(4), I(5), I(6), I(7), P(8), P(9), I(10)); break;
        case PLAN_CACHE_WRITE: vc_cache_write(P(0), L(1), P(2), L(3), P(4), P(5), P(6), I(7), L(8)); break;
        case PLAN_DECODE_ATTENTION:
            vc_decode_attention(P(0), L(1), P(2), P(3), P(4), I(5), P(6), P(7), L(8), I(9), I(10), I(11), I(12),
                                I(13), F(14), I(15));
            break;
        case PLAN_SILU_AND_MUL: vc_silu_and_mul(P(0), P(1), I(2), I(3), I(4)); break;
        case PLAN_SILU_MLP:
            vc_silu_mlp(P(0), L(1), P(2), P(3), P(4), P(5), P(6), L(7), I(8), I(9), I(10), I(11), P(12), I(13));
            break;
        case PLAN_EMBEDDING: vc_embedding(P(0), I(1), P(2), L(3), L(4), P(5)); break;
        case PLAN_HEAD_RMS_NORM: vc_head_rms_norm(P(0), L(1), P(2), P(3), I(4), I(5), I(6), F(7), I(8)); break;
        case PLAN_LINEAR_Q:
            vc_linear_q(P(0), L(1), P(2), P(3), P(4), L(5), I(6), I(7), I(8), I(9), I(10), I(11), I(12));
            break;
        case PLAN_CALLBACK: vc_callback((task_fn)P(0), I(1)); break;
        case PLAN_LORA:
            vc_lora(P(0), L(1), P(2), L(3), P(4), P(5), P(6), P(7), I(8), I(9), I(10), I(11), I(12), I(13), I(14),
                    I(15));
            break;
        default: return j;
        }
    }
    return -1;
#undef P
#undef L
#undef I
#undef F
}
