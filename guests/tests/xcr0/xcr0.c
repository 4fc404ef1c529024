// SPDX-License-Identifier: GPL-2.0
/*
 * In-guest test for the per-thread XCR0 override (ARCH_GET_XCR0 0x1041 /
 * ARCH_SET_XCR0 0x1042). See README.md next to this file for the cases.
 *
 * Build: gcc -static -O2 -pthread -Wall -o xcr0 xcr0.c
 *
 * Prints KTAP and exits 0 (all ran cases passed), 1 (a case failed) or
 * 4 (every case skipped). Every expectation is derived from CPUID and from
 * the kernel's own answers; nothing is hard-coded per CPU model. On a
 * kernel without the feature (ARCH_GET_XCR0 fails with EINVAL) the feature
 * cases are skipped and the rest still run.
 *
 * libc's string functions pick AVX/AVX-512 code at start-up; with XCR0
 * lowered they would raise #UD. The program therefore re-executes itself
 * once with GLIBC_TUNABLES switching those variants off.
 */
#define _GNU_SOURCE
#include <cpuid.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/klog.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <ucontext.h>
#include <unistd.h>

#ifndef ARCH_GET_XCOMP_SUPP
#define ARCH_GET_XCOMP_SUPP	0x1021
#endif
#define ARCH_GET_XCR0		0x1041
#define ARCH_SET_XCR0		0x1042
#ifndef AF_ALG
#define AF_ALG			38
#endif
#ifndef AT_MINSIGSTKSZ
#define AT_MINSIGSTKSZ		51
#endif
#ifndef NT_X86_XSTATE
#define NT_X86_XSTATE		0x202
#endif

#define XF_X87		(1ULL << 0)
#define XF_SSE		(1ULL << 1)
#define XF_AVX		(1ULL << 2)
#define XF_MPX		(3ULL << 3)
#define XF_AVX512	(7ULL << 5)
#define XF_PKRU		(1ULL << 9)
#define XF_AMX		(3ULL << 17)

#define NCASES		48

#define FP_XSTATE_MAGIC1	0x46505853U
#define FP_XSTATE_MAGIC2	0x46505845U

#define TUNABLES "glibc.cpu.hwcaps=-AVX_Fast_Unaligned_Load,-AVX,-AVX2," \
	"-AVX512F,-AVX512VL,-AVX512BW,-AVX512DQ,-AVX512CD,-FMA,-FMA4,-XSAVEC"

/* ------------------------------------------------------------------ */
/* KTAP output                                                         */

static int test_no, n_pass, n_fail, n_skip;

static void diag(const char *fmt, ...)
{
	va_list ap;

	printf("# ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
}

static void result(int ok, const char *name)
{
	test_no++;
	if (ok) {
		n_pass++;
		printf("ok %d %s\n", test_no, name);
	} else {
		n_fail++;
		printf("not ok %d %s\n", test_no, name);
	}
	fflush(stdout);
}

static void skip(const char *name, const char *fmt, ...)
{
	va_list ap;

	test_no++;
	n_skip++;
	printf("ok %d %s # SKIP ", test_no, name);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
}

/* ------------------------------------------------------------------ */
/* CPU helpers                                                         */

static inline void cpuid_count(unsigned int leaf, unsigned int sub, unsigned int *a,
			       unsigned int *b, unsigned int *c, unsigned int *d)
{
	__cpuid_count(leaf, sub, *a, *b, *c, *d);
}

static inline uint64_t xgetbv0(void)
{
	uint32_t lo, hi;

	asm volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
	return lo | ((uint64_t)hi << 32);
}

static int have_ospke;		/* CPUID.7.0:ECX.OSPKE */

static inline uint32_t rdpkru(void)
{
	uint32_t eax, edx;

	asm volatile(".byte 0x0f,0x01,0xee" : "=a"(eax), "=d"(edx) : "c"(0));
	return eax;
}

static long arch_prctl(long code, unsigned long arg)
{
	return syscall(SYS_arch_prctl, code, arg);
}

static uint64_t get_xcr0(void)
{
	uint64_t v = 0;

	if (arch_prctl(ARCH_GET_XCR0, (unsigned long)&v))
		return ~0ULL;
	return v;
}

static long set_xcr0(uint64_t v)
{
	return arch_prctl(ARCH_SET_XCR0, v) ? -errno : 0;
}

static int have_xsave;		/* CPUID.1:ECX.OSXSAVE */
static int feature;		/* ARCH_GET_XCR0 works */
static const char *nofeat;	/* why not */
static uint64_t kxcr0;		/* the kernel's XCR0 */
static uint64_t xcomp_supp;	/* ARCH_GET_XCOMP_SUPP */
static uint64_t reduced;	/* the smallest legal override: x87|SSE */
static int ncpus;

/* Size of the standard-format XSAVE area for @xcr0, from CPUID 0xD. */
static unsigned int xsave_size(uint64_t xcr0)
{
	unsigned int a, b, c, d, size = 576;
	int i;

	for (i = 2; i < 63; i++) {
		if (!(xcr0 & (1ULL << i)))
			continue;
		cpuid_count(0xd, i, &a, &b, &c, &d);
		if (a + b > size)
			size = a + b;
	}
	return size;
}

static void comp_range(int i, unsigned int *off, unsigned int *size)
{
	unsigned int a, b, c, d;

	cpuid_count(0xd, i, &a, &b, &c, &d);
	*size = a;
	*off = b;
}

static unsigned int cpuid_xsave_size(void)
{
	unsigned int a, b, c, d;

	cpuid_count(0xd, 0, &a, &b, &c, &d);
	return b;
}

static int check_xcr0_is(uint64_t want, const char *what)
{
	uint64_t x = xgetbv0(), g = feature ? get_xcr0() : want;

	if (x != want || g != want) {
		diag("%s: XGETBV %#llx GET %#llx, expected %#llx", what,
		     (unsigned long long)x, (unsigned long long)g,
		     (unsigned long long)want);
		return 0;
	}
	return 1;
}

static void back_to_kernel(void)
{
	if (feature)
		set_xcr0(kxcr0);
}

/* ------------------------------------------------------------------ */
/* Vector registers around a system call, in one asm block            */

struct vregs {
	uint8_t r[16][32];
} __attribute__((aligned(64)));

#define LDX(n) "movdqu " #n "*32(%[in]), %%xmm" #n "\n\t"
#define STX(n) "movdqu %%xmm" #n ", " #n "*32(%[out])\n\t"
#define LDY(n) "vmovdqu " #n "*32(%[in]), %%ymm" #n "\n\t"
#define STY(n) "vmovdqu %%ymm" #n ", " #n "*32(%[out])\n\t"
#define X16(M) M(0) M(1) M(2) M(3) M(4) M(5) M(6) M(7) \
		M(8) M(9) M(10) M(11) M(12) M(13) M(14) M(15)
#define VCLOB "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", \
	"xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15"

/*
 * Load xmm0-15 (or ymm0-15) from @in, run syscall @nr, store them to @out.
 * The kernel must preserve them.
 */
static long vec_syscall(int ymm, long nr, long a1, long a2, long a3,
			const struct vregs *in, struct vregs *out)
{
	register long r10 asm("r10") = 0;
	long ret;

	if (ymm)
		asm volatile(X16(LDY) "syscall\n\t" X16(STY)
			     : "=a"(ret), "+r"(r10)
			     : "0"(nr), "D"(a1), "S"(a2), "d"(a3),
			       [in] "r"(in), [out] "r"(out)
			     : "rcx", "r11", "memory", VCLOB);
	else
		asm volatile(X16(LDX) "syscall\n\t" X16(STX)
			     : "=a"(ret), "+r"(r10)
			     : "0"(nr), "D"(a1), "S"(a2), "d"(a3),
			       [in] "r"(in), [out] "r"(out)
			     : "rcx", "r11", "memory", VCLOB);
	return ret;
}

/* arch_prctl(ARCH_SET_XCR0, reg) and a sched_yield() loop, inside asm */
#define SETX(reg) "mov $158, %%eax\n\tmov $0x1042, %%edi\n\tmov %" reg ", %%rsi\n\tsyscall\n\t"
#define YIELD_LOOP "1: mov $24, %%eax\n\tsyscall\n\tdec %[cnt]\n\tjnz 1b\n\t"

/* Load ymm0-15, SET(@off), SET(@on), store ymm0-15: no AVX in between. */
static void ymm_off_on(const struct vregs *in, struct vregs *out, uint64_t off, uint64_t on)
{
	asm volatile(X16(LDY) SETX("[offv]") SETX("[onv]") X16(STY)
		     :
		     : [in] "r"(in), [out] "r"(out), [offv] "r"(off), [onv] "r"(on)
		     : "rax", "rdi", "rsi", "rcx", "r11", "memory", VCLOB);
}

static void fill_vregs(struct vregs *v, uint64_t seed)
{
	uint64_t *p = (uint64_t *)v;
	unsigned int i;

	for (i = 0; i < sizeof(*v) / 8; i++) {
		seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
		p[i] = seed | 1;
	}
}

/* Compare the lower @width bytes of each register. */
static int vregs_equal(const struct vregs *a, const struct vregs *b, int width)
{
	int i;

	for (i = 0; i < 16; i++)
		if (memcmp(a->r[i], b->r[i], width))
			return 0;
	return 1;
}

/* ------------------------------------------------------------------ */
/* SIGILL probing                                                      */

static sigjmp_buf ill_jmp;
static volatile sig_atomic_t ill_armed;

static void ill_handler(int sig)
{
	if (ill_armed)
		siglongjmp(ill_jmp, 1);
	_exit(99);
}

static int raises_sigill(void (*fn)(void))
{
	struct sigaction sa = { .sa_handler = ill_handler }, old;
	int ill = 0;

	sigemptyset(&sa.sa_mask);
	sigaction(SIGILL, &sa, &old);
	if (sigsetjmp(ill_jmp, 1) == 0) {
		ill_armed = 1;
		fn();
		ill_armed = 0;
	} else {
		ill_armed = 0;
		ill = 1;
	}
	sigaction(SIGILL, &old, NULL);
	return ill;
}

static void do_avx(void)
{
	asm volatile("vaddps %%ymm0, %%ymm0, %%ymm0" ::: "xmm0");
}

static void do_avx512(void)
{
	asm volatile("vpxord %%zmm0, %%zmm0, %%zmm0" ::: "xmm0");
}

/* ------------------------------------------------------------------ */
/* Group 1: GET                                                        */

static void group1(void)
{
	long r;

	if (!feature) {
		skip("get_equals_xgetbv", "%s", nofeat);
		skip("get_equals_xcomp_supp", "%s", nofeat);
		skip("get_null_efault", "%s", nofeat);
	} else {
		uint64_t g = get_xcr0();

		diag("GET %#llx XGETBV %#llx XCOMP_SUPP %#llx", (unsigned long long)g,
		     (unsigned long long)xgetbv0(), (unsigned long long)xcomp_supp);
		result(g == xgetbv0(), "get_equals_xgetbv");
		result(g == xcomp_supp, "get_equals_xcomp_supp");
		r = arch_prctl(ARCH_GET_XCR0, 0);
		if (r != -1 || errno != EFAULT)
			diag("GET(NULL) returned %ld errno %d", r, errno);
		result(r == -1 && errno == EFAULT, "get_null_efault");
	}
	/* Not a feature case: the kernel's XCR0 is what it reports. */
	result(xgetbv0() == xcomp_supp &&
	       cpuid_xsave_size() == xsave_size(kxcr0), "xgetbv_equals_xcomp_supp");
}

/* ------------------------------------------------------------------ */
/* Group 2: SET to the current value                                   */

static void group2(void)
{
	unsigned int size = cpuid_xsave_size();
	long r;

	if (!feature) {
		skip("set_current_value_noop", "%s", nofeat);
		return;
	}
	r = set_xcr0(kxcr0);
	result(r == 0 && check_xcr0_is(kxcr0, "SET(current)") &&
	       cpuid_xsave_size() == size, "set_current_value_noop");
}

/* ------------------------------------------------------------------ */
/* Group 3: legal reductions                                           */

static uint8_t xbuf_mem[65536 + 64] __attribute__((aligned(64)));

static int xsave_check(uint64_t v)
{
	unsigned int vsize = xsave_size(v), ksize = xsave_size(kxcr0);
	unsigned int total = ksize + 4096, off, sz, i;
	uint8_t *buf = xbuf_mem;
	uint64_t bv;
	int ok = 1, c;

	if (total > sizeof(xbuf_mem) - 64)
		total = sizeof(xbuf_mem) - 64;
	memset(buf, 0xa5, total);
	memset(buf + 512, 0, 64);	/* XSAVE leaves XSTATE_BV bits outside RFBM */
	asm volatile("xsave (%0)" :: "r"(buf), "a"(-1), "d"(-1) : "memory");

	for (i = vsize; i < total; i++)
		if (buf[i] != 0xa5) {
			diag("XSAVE with XCR0 %#llx wrote byte %u, size is %u",
			     (unsigned long long)v, i, vsize);
			ok = 0;
			break;
		}
	for (c = 2; c < 63; c++) {
		if (!(kxcr0 & (1ULL << c)) || (v & (1ULL << c)))
			continue;
		comp_range(c, &off, &sz);
		for (i = off; i < off + sz && i < total; i++)
			if (buf[i] != 0xa5) {
				diag("XSAVE wrote switched-off component %d", c);
				ok = 0;
				break;
			}
	}
	memcpy(&bv, buf + 512, 8);
	if (bv & ~v) {
		diag("XSTATE_BV %#llx claims components outside %#llx",
		     (unsigned long long)bv, (unsigned long long)v);
		ok = 0;
	}
	return ok;
}

static void try_reduction(const char *name, uint64_t v, const char *why_not)
{
	unsigned int want, got;
	uint32_t pkru;
	long r;
	int ok;

	if (!feature) {
		skip(name, "%s", nofeat);
		return;
	}
	if (why_not) {
		skip(name, "%s", why_not);
		return;
	}
	if (v == kxcr0) {
		skip(name, "%#llx is the kernel's XCR0, not a reduction",
		     (unsigned long long)v);
		return;
	}
	pkru = have_ospke ? rdpkru() : 0;
	r = set_xcr0(v);
	if (r) {
		diag("SET(%#llx) = %ld", (unsigned long long)v, r);
		result(0, name);
		return;
	}
	ok = check_xcr0_is(v, name);
	/* PKRU keeps its value and keeps protecting memory (CR4.PKE) */
	if (have_ospke && rdpkru() != pkru) {
		diag("PKRU changed from %#x to %#x", pkru, rdpkru());
		ok = 0;
	}
	want = xsave_size(v);
	got = cpuid_xsave_size();
	if (want != got) {
		diag("CPUID(0xD,0).EBX %u, expected %u for %#llx", got, want,
		     (unsigned long long)v);
		ok = 0;
	}
	ok &= xsave_check(v);
	back_to_kernel();
	ok &= check_xcr0_is(kxcr0, "after restore");
	ok &= cpuid_xsave_size() == xsave_size(kxcr0);
	result(ok, name);
}

/* Upper YMM halves hold data, AVX goes off and on: they must be zero. */
static void reenable_init(void)
{
	static struct vregs in, out;
	int i, ok = 1;

	if (!feature || !(kxcr0 & XF_AVX)) {
		skip("reenable_avx_shows_init", "%s", !feature ? nofeat : "no AVX");
		return;
	}
	fill_vregs(&in, 0x1234);
	ymm_off_on(&in, &out, reduced, kxcr0);
	for (i = 0; i < 16; i++) {
		static const uint8_t zero[16];

		if (memcmp(out.r[i] + 16, zero, 16)) {
			diag("ymm%d upper half not in init state", i);
			ok = 0;
			break;
		}
		if (memcmp(out.r[i], in.r[i], 16)) {
			diag("xmm%d lost its contents", i);
			ok = 0;
			break;
		}
	}
	ok &= check_xcr0_is(kxcr0, "after off/on");
	result(ok, "reenable_avx_shows_init");
}

static void group3(void)
{
	int has_avx = !!(kxcr0 & XF_AVX);

	try_reduction("reduce_to_x87_sse", XF_X87 | XF_SSE, NULL);
	try_reduction("reduce_to_x87_sse_avx", XF_X87 | XF_SSE | XF_AVX,
		      has_avx ? NULL : "no AVX in the kernel's XCR0");
	try_reduction("reduce_without_avx512", kxcr0 & ~XF_AVX512,
		      (kxcr0 & XF_AVX512) ? NULL : "no AVX-512 in the kernel's XCR0");
	try_reduction("reduce_without_pkru", kxcr0 & ~XF_PKRU,
		      (kxcr0 & XF_PKRU) ? NULL : "no PKRU in the kernel's XCR0");
	try_reduction("reduce_without_mpx", kxcr0 & ~XF_MPX,
		      (kxcr0 & XF_MPX) ? NULL : "no MPX in the kernel's XCR0");
	try_reduction("reduce_without_amx", kxcr0 & ~XF_AMX,
		      (kxcr0 & XF_AMX) ? NULL : "no AMX in the kernel's XCR0");
	reenable_init();
}

/* ------------------------------------------------------------------ */
/* Group 4: switched-off features fault                                */

static void group4(void)
{
	int ok;

	if (!(kxcr0 & XF_AVX)) {
		skip("avx_sigill_with_x87_sse", "no AVX in the kernel's XCR0");
	} else if (!feature) {
		skip("avx_sigill_with_x87_sse", "%s", nofeat);
	} else {
		ok = !raises_sigill(do_avx);
		ok &= set_xcr0(reduced) == 0;
		ok &= raises_sigill(do_avx);
		back_to_kernel();
		ok &= !raises_sigill(do_avx);
		result(ok, "avx_sigill_with_x87_sse");
	}
	if (!(kxcr0 & XF_AVX512)) {
		skip("avx512_sigill_without_avx512", "no AVX-512 in the kernel's XCR0");
	} else if (!feature) {
		skip("avx512_sigill_without_avx512", "%s", nofeat);
	} else {
		ok = !raises_sigill(do_avx512);
		ok &= set_xcr0(kxcr0 & ~XF_AVX512) == 0;
		ok &= raises_sigill(do_avx512);
		ok &= !raises_sigill(do_avx);
		back_to_kernel();
		ok &= !raises_sigill(do_avx512);
		result(ok, "avx512_sigill_without_avx512");
	}
}

/* ------------------------------------------------------------------ */
/* Group 5: invalid values                                             */

static void try_invalid(const char *name, uint64_t v, int want_errno, const char *why_not)
{
	uint64_t before;
	long r;
	int ok;

	if (!feature) {
		skip(name, "%s", nofeat);
		return;
	}
	if (why_not) {
		skip(name, "%s", why_not);
		return;
	}
	/* Hold an override so that "nothing changed" is not "reset" */
	before = (kxcr0 != reduced) ? reduced : kxcr0;
	set_xcr0(before);
	r = set_xcr0(v);
	ok = r == -want_errno;
	if (!ok)
		diag("SET(%#llx) = %ld, expected %d", (unsigned long long)v, r, -want_errno);
	ok &= check_xcr0_is(before, name);
	back_to_kernel();
	result(ok, name);
}

static void group5(void)
{
	uint64_t missing = 0;
	long r;
	int ok;

	try_invalid("invalid_bit63", kxcr0 | (1ULL << 63), EOPNOTSUPP, NULL);
	try_invalid("invalid_reserved_bit62", kxcr0 | (1ULL << 62), EOPNOTSUPP, NULL);
	try_invalid("invalid_supervisor_bit8", kxcr0 | (1ULL << 8), EOPNOTSUPP, NULL);
	try_invalid("invalid_supervisor_bit10", kxcr0 | (1ULL << 10), EOPNOTSUPP, NULL);
	try_invalid("invalid_supervisor_bit15", kxcr0 | (1ULL << 15), EOPNOTSUPP, NULL);
	if (!(kxcr0 & XF_AVX512))
		missing = XF_AVX512;
	else if (!(kxcr0 & XF_PKRU))
		missing = XF_PKRU;
	else if (!(kxcr0 & XF_MPX))
		missing = XF_MPX;
	else if (!(kxcr0 & XF_AMX))
		missing = XF_AMX;
	try_invalid("invalid_feature_not_enabled", kxcr0 | missing, EOPNOTSUPP,
		    missing ? NULL : "every feature is enabled");
	try_invalid("invalid_zero", 0, EINVAL, NULL);
	try_invalid("invalid_no_x87", kxcr0 & ~XF_X87, EINVAL, NULL);
	try_invalid("invalid_no_sse", kxcr0 & ~XF_SSE, EINVAL, NULL);
	try_invalid("invalid_avx_without_sse", XF_X87 | XF_AVX, EINVAL,
		    (kxcr0 & XF_AVX) ? NULL : "no AVX in the kernel's XCR0");
	try_invalid("invalid_half_mpx", kxcr0 & ~(1ULL << 4), EINVAL,
		    (kxcr0 & XF_MPX) == XF_MPX ? NULL : "no MPX in the kernel's XCR0");
	try_invalid("invalid_partial_avx512", kxcr0 & ~(1ULL << 6), EINVAL,
		    (kxcr0 & XF_AVX512) ? NULL : "no AVX-512 in the kernel's XCR0");
	try_invalid("invalid_avx512_without_avx", kxcr0 & ~XF_AVX, EINVAL,
		    (kxcr0 & XF_AVX512) ? NULL : "no AVX-512 in the kernel's XCR0");
	try_invalid("invalid_half_amx", kxcr0 & ~(1ULL << 18), EINVAL,
		    (kxcr0 & XF_AMX) == XF_AMX ? NULL : "no AMX in the kernel's XCR0");

	/* Not a feature case: codes next to the new ones are unknown. */
	r = arch_prctl(0x1043, 0);
	ok = r == -1 && errno == EINVAL;
	r = arch_prctl(0x1040, 0);
	ok &= r == -1 && errno == EINVAL;
	ok &= xgetbv0() == kxcr0;
	result(ok, "unknown_code_einval");
}

/* ------------------------------------------------------------------ */
/* Group 6: context switches                                           */

struct cs_arg {
	int id, cpu, iters, toggle, migrate;
	uint64_t xcr0;
	int ok;
	char msg[128];
};

static void pin_self(int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	sched_setaffinity(0, sizeof(set), &set);
}

static void *cs_thread(void *p)
{
	struct cs_arg *a = p;
	static __thread struct vregs in, out;
	uint64_t want = a->xcr0;
	int i;

	a->ok = 1;
	if (a->cpu >= 0)
		pin_self(a->cpu);
	if (feature && set_xcr0(want)) {
		snprintf(a->msg, sizeof(a->msg), "thread %d: SET(%#llx) failed", a->id,
			 (unsigned long long)want);
		a->ok = 0;
		return NULL;
	}
	for (i = 0; i < a->iters; i++) {
		int ymm;

		if (a->toggle && (i & 1)) {
			want = (want == kxcr0) ? reduced : kxcr0;
			set_xcr0(want);
		}
		if (a->migrate && i % 16 == 0)
			pin_self((a->id + i / 16) % ncpus);
		ymm = !!(want & XF_AVX);
		fill_vregs(&in, a->id * 1000003ULL + i);
		vec_syscall(ymm, SYS_sched_yield, 0, 0, 0, &in, &out);
		if (xgetbv0() != want) {
			snprintf(a->msg, sizeof(a->msg), "thread %d iter %d: XGETBV %#llx want %#llx",
				 a->id, i, (unsigned long long)xgetbv0(),
				 (unsigned long long)want);
			a->ok = 0;
			break;
		}
		if (!vregs_equal(&in, &out, ymm ? 32 : 16)) {
			snprintf(a->msg, sizeof(a->msg), "thread %d iter %d: %s registers corrupted",
				 a->id, i, ymm ? "ymm" : "xmm");
			a->ok = 0;
			break;
		}
	}
	back_to_kernel();
	return NULL;
}

static int run_cs(int pinned, int migrate)
{
	enum { NT = 8 };
	struct cs_arg args[NT];
	pthread_t t[NT];
	int i, ok = 1;

	for (i = 0; i < NT; i++) {
		memset(&args[i], 0, sizeof(args[i]));
		args[i].id = i;
		args[i].cpu = pinned ? 0 : -1;
		args[i].iters = 400;
		args[i].migrate = migrate;
		args[i].toggle = feature && (i == NT - 1);
		args[i].xcr0 = (feature && (i & 1)) ? reduced : kxcr0;
		pthread_create(&t[i], NULL, cs_thread, &args[i]);
	}
	for (i = 0; i < NT; i++) {
		pthread_join(t[i], NULL);
		if (!args[i].ok) {
			diag("%s", args[i].msg);
			ok = 0;
		}
	}
	return ok;
}

/* Holder keeps a pattern in the widest vector registers and yields. */
static volatile int holder_stop;
static int wide512;

static void *holder(void *p)
{
	static __thread uint8_t pat[64 * 2 + 8] __attribute__((aligned(64)));

	pin_self(0);
	memset(pat, 0x5a, sizeof(pat));
	while (!holder_stop) {
		if (wide512)
			asm volatile("vmovdqu64 (%0), %%zmm0\n\t"
				     "vmovdqu64 64(%0), %%zmm16\n\t"
				     "kmovw 128(%0), %%k1\n\t"
				     "syscall"
				     :: "r"(pat), "a"((long)SYS_sched_yield)
				     : "rcx", "r11", "memory", "xmm0");
		else
			asm volatile("vmovdqu (%0), %%ymm0\n\t"
				     "vmovdqu 32(%0), %%ymm1\n\t"
				     "syscall"
				     :: "r"(pat), "a"((long)SYS_sched_yield)
				     : "rcx", "r11", "memory", "xmm0", "xmm1");
	}
	return NULL;
}

/*
 * One asm block: load own data, switch the wide component off, yield to
 * the holder a number of times, switch it on, read the registers back.
 */
static int reenable_sees_zeros(void)
{
	static uint8_t in[192] __attribute__((aligned(64)));
	static uint8_t out[192] __attribute__((aligned(64)));
	uint64_t off = wide512 ? (kxcr0 & ~XF_AVX512) : reduced;
	register long cnt asm("r12") = 50;
	register uint64_t offv asm("r13") = off;
	register uint64_t onv asm("r14") = kxcr0;
	pthread_t t;
	int i, ok = 1;

	holder_stop = 0;
	pthread_create(&t, NULL, holder, NULL);
	pin_self(0);
	memset(in, 0x33, sizeof(in));
	memset(out, 0xee, sizeof(out));

	if (wide512)
		asm volatile("vmovdqu64 (%[in]), %%zmm0\n\t"
			     "vmovdqu64 64(%[in]), %%zmm16\n\t"
			     "kmovw 128(%[in]), %%k1\n\t"
			     SETX("[offv]") YIELD_LOOP SETX("[onv]")
			     "vmovdqu64 %%zmm0, (%[out])\n\t"
			     "vmovdqu64 %%zmm16, 64(%[out])\n\t"
			     "kmovw %%k1, 128(%[out])\n\t"
			     : [cnt] "+r"(cnt)
			     : [in] "r"(in), [out] "r"(out), [offv] "r"(offv), [onv] "r"(onv)
			     : "rax", "rdi", "rsi", "rcx", "r11", "memory", "xmm0");
	else
		asm volatile("vmovdqu (%[in]), %%ymm0\n\t"
			     "vmovdqu 32(%[in]), %%ymm1\n\t"
			     SETX("[offv]") YIELD_LOOP SETX("[onv]")
			     "vmovdqu %%ymm0, (%[out])\n\t"
			     "vmovdqu %%ymm1, 32(%[out])\n\t"
			     : [cnt] "+r"(cnt)
			     : [in] "r"(in), [out] "r"(out), [offv] "r"(offv), [onv] "r"(onv)
			     : "rax", "rdi", "rsi", "rcx", "r11", "memory", "xmm0", "xmm1");
	holder_stop = 1;
	pthread_join(t, NULL);

	if (wide512) {
		/* zmm0: low 32 bytes own data (YMM on), high 32 init */
		for (i = 0; i < 32; i++)
			ok &= out[i] == 0x33;
		for (i = 32; i < 64 + 64 + 2; i++)
			ok &= out[i] == 0;
	} else {
		for (i = 0; i < 64; i++)
			ok &= out[i] == (((i & 31) < 16) ? 0x33 : 0);
	}
	if (!ok) {
		diag("after switching %s off and on: bytes", wide512 ? "AVX-512" : "AVX");
		for (i = 0; i < (wide512 ? 130 : 64); i += 16)
			diag("  %3d: %02x %02x %02x %02x ... %02x", i, out[i], out[i + 1],
			     out[i + 2], out[i + 3], out[i + 15]);
	}
	ok &= check_xcr0_is(kxcr0, "after re-enable");
	return ok;
}

static void group6(void)
{
	cpu_set_t all;
	int i;

	if (!feature)
		diag("no override available: context switch cases run with the kernel's XCR0 only");
	result(run_cs(1, 0), "ctxsw_pinned_one_cpu");
	if (ncpus < 2)
		skip("ctxsw_unpinned_migrating", "only one CPU");
	else
		result(run_cs(0, 1), "ctxsw_unpinned_migrating");

	wide512 = !!(kxcr0 & XF_AVX512);
	if (!feature)
		skip("reenable_sees_zeros_not_other_thread", "%s", nofeat);
	else if (!(kxcr0 & XF_AVX))
		skip("reenable_sees_zeros_not_other_thread", "no AVX in the kernel's XCR0");
	else {
		if (!wide512)
			diag("no AVX-512: switching AVX off and on instead");
		result(reenable_sees_zeros(), "reenable_sees_zeros_not_other_thread");
	}
	CPU_ZERO(&all);
	for (i = 0; i < ncpus && i < CPU_SETSIZE; i++)
		CPU_SET(i, &all);
	sched_setaffinity(0, sizeof(all), &all);
}

/* ------------------------------------------------------------------ */
/* Group 7: kernel FPU use (AF_ALG) under an override                  */

static const uint32_t sha_k[64] = {
	0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
	0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
	0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
	0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
	0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
	0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
	0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
	0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha256_block(uint32_t h[8], const uint8_t *p)
{
	uint32_t w[64], a, b, c, d, e, f, g, hh, t1, t2;
	int i;

	for (i = 0; i < 16; i++)
		w[i] = (uint32_t)p[4 * i] << 24 | p[4 * i + 1] << 16 | p[4 * i + 2] << 8 | p[4 * i + 3];
	for (i = 16; i < 64; i++)
		w[i] = w[i - 16] + (ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3)) +
		       w[i - 7] + (ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10));
	a = h[0]; b = h[1]; c = h[2]; d = h[3]; e = h[4]; f = h[5]; g = h[6]; hh = h[7];
	for (i = 0; i < 64; i++) {
		t1 = hh + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + sha_k[i] + w[i];
		t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
		hh = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
	}
	h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += hh;
}

static void sha256(const uint8_t *data, size_t len, uint8_t out[32])
{
	uint32_t h[8] = { 0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
			  0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19 };
	uint8_t blk[128];
	size_t i, rem = len % 64, n;

	for (i = 0; i + 64 <= len; i += 64)
		sha256_block(h, data + i);
	memset(blk, 0, sizeof(blk));
	memcpy(blk, data + i, rem);
	blk[rem] = 0x80;
	n = rem < 56 ? 64 : 128;
	for (i = 0; i < 8; i++)
		blk[n - 1 - i] = (uint8_t)((uint64_t)len * 8 >> (8 * i));
	sha256_block(h, blk);
	if (n == 128)
		sha256_block(h, blk + 64);
	for (i = 0; i < 32; i++)
		out[i] = h[i / 4] >> (24 - 8 * (i % 4));
}

struct sockaddr_alg_compat {
	unsigned short salg_family;
	unsigned char salg_type[14];
	unsigned int salg_feat;
	unsigned int salg_mask;
	unsigned char salg_name[64];
};

static int alg_open(void)
{
	struct sockaddr_alg_compat sa = { .salg_family = AF_ALG };
	int tfm, op;

	strcpy((char *)sa.salg_type, "hash");
	strcpy((char *)sa.salg_name, "sha256");
	tfm = socket(AF_ALG, SOCK_SEQPACKET, 0);
	if (tfm < 0)
		return -1;
	if (bind(tfm, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		close(tfm);
		return -2;
	}
	op = accept(tfm, NULL, 0);
	close(tfm);
	return op < 0 ? -2 : op;
}

static uint8_t alg_data[16384];

struct alg_arg {
	uint64_t xcr0;
	int cpu, iters, ok;
	char msg[128];
};

static void *alg_thread(void *p)
{
	struct alg_arg *a = p;
	static __thread struct vregs in, out;
	uint8_t ref[32], dig[32];
	int i, op, ymm;

	a->ok = 1;
	pin_self(a->cpu);
	op = alg_open();
	if (op < 0) {
		snprintf(a->msg, sizeof(a->msg), "AF_ALG open failed");
		a->ok = 0;
		return NULL;
	}
	sha256(alg_data, sizeof(alg_data), ref);
	if (feature)
		set_xcr0(a->xcr0);
	ymm = !!(a->xcr0 & XF_AVX);
	for (i = 0; i < a->iters && a->ok; i++) {
		fill_vregs(&in, i);
		/* The kernel hashes with SIMD while our registers hold data */
		if (vec_syscall(ymm, SYS_write, op, (long)alg_data, sizeof(alg_data),
				&in, &out) != sizeof(alg_data)) {
			snprintf(a->msg, sizeof(a->msg), "write: %s", strerror(errno));
			a->ok = 0;
		} else if (!vregs_equal(&in, &out, ymm ? 32 : 16)) {
			snprintf(a->msg, sizeof(a->msg), "iter %d: registers corrupted", i);
			a->ok = 0;
		} else if (read(op, dig, 32) != 32 || memcmp(dig, ref, 32)) {
			snprintf(a->msg, sizeof(a->msg), "iter %d: wrong digest", i);
			a->ok = 0;
		} else if (xgetbv0() != (feature ? a->xcr0 : kxcr0)) {
			snprintf(a->msg, sizeof(a->msg), "iter %d: XGETBV %#llx", i,
				 (unsigned long long)xgetbv0());
			a->ok = 0;
		}
	}
	back_to_kernel();
	close(op);
	return NULL;
}

static int klog_count(void)
{
	static char buf[1 << 17];
	int n = klogctl(3, buf, sizeof(buf)), c = 0;
	char *p;

	if (n < 0)
		return -1;
	buf[n] = 0;
	for (p = buf; (p = strstr(p, "WARNING")); p++)
		c++;
	for (p = buf; (p = strstr(p, "invalid opcode")); p++)
		c++;
	for (p = buf; (p = strstr(p, "Call Trace")); p++)
		c++;
	return c;
}

static int run_alg(uint64_t v1, uint64_t v2)
{
	struct alg_arg a[2] = { { .xcr0 = v1, .cpu = 0, .iters = 150 },
				{ .xcr0 = v2, .cpu = ncpus > 1 ? 1 : 0, .iters = 150 } };
	pthread_t t[2];
	int i, ok = 1, w0 = klog_count(), w1;

	for (i = 0; i < 2; i++)
		pthread_create(&t[i], NULL, alg_thread, &a[i]);
	for (i = 0; i < 2; i++) {
		pthread_join(t[i], NULL);
		if (!a[i].ok) {
			diag("XCR0 %#llx: %s", (unsigned long long)a[i].xcr0, a[i].msg);
			ok = 0;
		}
	}
	w1 = klog_count();
	if (w0 < 0)
		diag("cannot read the kernel log, warning check skipped");
	else if (w1 != w0) {
		diag("kernel log gained %d warning/oops lines", w1 - w0);
		ok = 0;
	}
	return ok;
}

static void group7(void)
{
	int i, op = alg_open();

	if (op == -1) {
		skip("kernel_fpu_af_alg_kernel_xcr0", "AF_ALG unavailable: %s", strerror(errno));
		skip("kernel_fpu_af_alg_override", "AF_ALG unavailable");
		return;
	}
	if (op == -2) {
		skip("kernel_fpu_af_alg_kernel_xcr0", "no sha256 hash via AF_ALG");
		skip("kernel_fpu_af_alg_override", "no sha256 hash via AF_ALG");
		return;
	}
	close(op);
	for (i = 0; i < (int)sizeof(alg_data); i++)
		alg_data[i] = i * 7 + (i >> 8);
	result(run_alg(kxcr0, kxcr0), "kernel_fpu_af_alg_kernel_xcr0");
	if (!feature)
		skip("kernel_fpu_af_alg_override", "%s", nofeat);
	else
		result(run_alg(reduced, kxcr0), "kernel_fpu_af_alg_override");
}

/* ------------------------------------------------------------------ */
/* Group 8: signals                                                    */

struct sig_obs {
	uint64_t xgetbv, xstate_bv, xfeatures;
	uint32_t magic1, magic2, ext_size, xstate_size;
	long frame_used;	/* altstack top - fpstate */
	int nested_ok, depth;
};

static volatile struct sig_obs obs;
static char *alt_top;
static uint8_t edit_pat[16];

static void frame_handler(int sig, siginfo_t *si, void *ctx)
{
	ucontext_t *uc = ctx;
	uint8_t *fp = (uint8_t *)uc->uc_mcontext.fpregs;
	uint32_t u32;
	uint64_t u64;

	obs.xgetbv = xgetbv0();
	memcpy(&u32, fp + 464, 4); obs.magic1 = u32;
	memcpy(&u32, fp + 468, 4); obs.ext_size = u32;
	memcpy(&u64, fp + 472, 8); obs.xfeatures = u64;
	memcpy(&u32, fp + 480, 4); obs.xstate_size = u32;
	if (obs.magic1 == FP_XSTATE_MAGIC1) {
		memcpy(&u32, fp + obs.xstate_size, 4);
		obs.magic2 = u32;
		memcpy(&u64, fp + 512, 8);
		obs.xstate_bv = u64;
	}
	obs.frame_used = alt_top ? alt_top - (char *)fp : 0;
	/* edit xmm0 in the frame: sigreturn must restore it */
	memcpy(fp + 160, edit_pat, 16);
}

static int sig_once(uint64_t v, struct sig_obs *o, int *xmm_ok, uint64_t *after)
{
	static struct vregs in, out;
	struct sigaction sa = { .sa_sigaction = frame_handler, .sa_flags = SA_SIGINFO | SA_ONSTACK };

	sigemptyset(&sa.sa_mask);
	sigaction(SIGUSR1, &sa, NULL);
	if (feature && set_xcr0(v))
		return 0;
	memset((void *)&obs, 0, sizeof(obs));
	fill_vregs(&in, v);
	memset(edit_pat, 0xc3, sizeof(edit_pat));
	vec_syscall(0, SYS_kill, getpid(), SIGUSR1, 0, &in, &out);
	*after = xgetbv0();
	*xmm_ok = !memcmp(out.r[0], edit_pat, 16) && !memcmp(out.r[1], in.r[1], 16);
	back_to_kernel();
	memcpy(o, (void *)&obs, sizeof(*o));
	return 1;
}

static volatile int nest_level;
static volatile uint64_t nest_xgetbv[3];

static void nest_inner(int sig)
{
	nest_xgetbv[1] = xgetbv0();
}

static void nest_outer(int sig)
{
	nest_xgetbv[0] = xgetbv0();
	kill(getpid(), SIGUSR2);
	nest_xgetbv[2] = xgetbv0();
}

static void group8(void)
{
	unsigned long minsig = getauxval(AT_MINSIGSTKSZ);
	/* AMX tile data is only in frames of tasks that asked for it */
	uint64_t fxf = kxcr0 & ~(1ULL << 18);
	unsigned int fsize = xsave_size(fxf);
	uint64_t v = feature ? reduced : kxcr0, after;
	struct sig_obs ok_k, ok_r;
	stack_t ss = { 0 };
	size_t altsize = 65536;
	int ok, xmm_ok;
	char *alt;

	alt = malloc(altsize);
	ss.ss_sp = alt;
	ss.ss_size = altsize;
	sigaltstack(&ss, NULL);
	alt_top = alt + altsize;

	sig_once(kxcr0, &ok_k, &xmm_ok, &after);
	if (!sig_once(v, &ok_r, &xmm_ok, &after)) {
		result(0, "signal_frame_kernel_format");
	} else {
		ok = ok_r.magic1 == FP_XSTATE_MAGIC1 && ok_r.magic2 == FP_XSTATE_MAGIC2 &&
		     ok_r.xfeatures == fxf && ok_r.xstate_size == fsize &&
		     ok_r.ext_size == fsize + 4 && ok_r.frame_used == ok_k.frame_used &&
		     ok_k.xfeatures == fxf;
		if (!ok)
			diag("frame: magic %#x/%#x xfeatures %#llx xstate_size %u ext %u used %ld "
			     "(kernel XCR0: xfeatures %#llx used %ld; expected %#llx size %u)",
			     ok_r.magic1, ok_r.magic2,
			     (unsigned long long)ok_r.xfeatures, ok_r.xstate_size,
			     ok_r.ext_size, ok_r.frame_used, (unsigned long long)ok_k.xfeatures,
			     ok_k.frame_used, (unsigned long long)fxf, fsize);
		/*
		 * PKRU is exempt: the kernel manages it with WRPKRU whatever
		 * XCR0 says, keeps it in the frame and restores it on sigreturn.
		 */
		if (ok_r.xstate_bv & ~v & ~XF_PKRU) {
			diag("frame XSTATE_BV %#llx claims components outside %#llx",
			     (unsigned long long)ok_r.xstate_bv, (unsigned long long)v);
			ok = 0;
		}
		if (!feature)
			diag("no override available: frame checked with the kernel's XCR0");
		result(ok, "signal_frame_kernel_format");
	}
	if (!feature) {
		skip("signal_handler_xgetbv_override", "%s", nofeat);
	} else {
		ok = ok_r.xgetbv == v && after == v;
		if (!ok)
			diag("XGETBV in handler %#llx after sigreturn %#llx want %#llx",
			     (unsigned long long)ok_r.xgetbv, (unsigned long long)after,
			     (unsigned long long)v);
		result(ok, "signal_handler_xgetbv_override");
	}
	if (!xmm_ok)
		diag("xmm0 edited in the frame was not restored by sigreturn");
	result(xmm_ok, "signal_frame_edit_restored");

	/* nested signals on a minimum-size alternate stack */
	{
		struct sigaction so = { .sa_handler = nest_outer, .sa_flags = SA_ONSTACK };
		struct sigaction si = { .sa_handler = nest_inner, .sa_flags = SA_ONSTACK };
		size_t sz;

		if (minsig < MINSIGSTKSZ)
			minsig = MINSIGSTKSZ;
		/* two frames plus a little room for the two tiny handlers */
		sz = 2 * minsig + 1024;
		ss.ss_size = sz;
		ss.ss_sp = alt + altsize - sz;
		ss.ss_flags = 0;
		if (sigaltstack(&ss, NULL)) {
			diag("sigaltstack(%zu): %s", sz, strerror(errno));
			result(0, "signal_nested_min_sigaltstack");
		} else {
			diag("AT_MINSIGSTKSZ %lu, alternate stack %zu bytes", minsig, sz);
			sigemptyset(&so.sa_mask);
			sigemptyset(&si.sa_mask);
			sigaction(SIGUSR1, &so, NULL);
			sigaction(SIGUSR2, &si, NULL);
			if (feature)
				set_xcr0(v);
			nest_xgetbv[0] = nest_xgetbv[1] = nest_xgetbv[2] = 0;
			kill(getpid(), SIGUSR1);
			after = xgetbv0();
			back_to_kernel();
			ok = nest_xgetbv[0] == v && nest_xgetbv[1] == v &&
			     nest_xgetbv[2] == v && after == v;
			if (!ok)
				diag("nested XGETBV %#llx %#llx %#llx after %#llx want %#llx",
				     (unsigned long long)nest_xgetbv[0],
				     (unsigned long long)nest_xgetbv[1],
				     (unsigned long long)nest_xgetbv[2],
				     (unsigned long long)after, (unsigned long long)v);
			result(ok, "signal_nested_min_sigaltstack");
		}
	}
	ss.ss_flags = SS_DISABLE;
	sigaltstack(&ss, NULL);
	signal(SIGUSR1, SIG_DFL);
	signal(SIGUSR2, SIG_DFL);
	alt_top = NULL;
	free(alt);
}

/* ------------------------------------------------------------------ */
/* Group 9: ptrace                                                     */

static void group9(void)
{
	static uint8_t xs[65536] __attribute__((aligned(64)));
	static struct vregs in, out;
	unsigned int ksize = xsave_size(kxcr0);
	uint64_t v = feature ? reduced : kxcr0, sw;
	struct iovec iov = { xs, sizeof(xs) };
	int status, ok_size, ok_sw, ok_cont;
	pid_t pid;

	fill_vregs(&in, 77);
	pid = fork();
	if (pid == 0) {
		int bad = 0;

		ptrace(PTRACE_TRACEME, 0, 0, 0);
		if (feature && set_xcr0(v))
			_exit(10);
		vec_syscall(0, SYS_kill, getpid(), SIGSTOP, 0, &in, &out);
		if (xgetbv0() != v || (feature && get_xcr0() != v))
			bad |= 1;
		if (memcmp(out.r[0], in.r[0], 16))
			bad |= 2;
		if (out.r[1][0] != 0x99 || out.r[1][15] != 0x99)
			bad |= 4;
		_exit(bad ? 20 + bad : 0);
	}
	waitpid(pid, &status, 0);
	if (!WIFSTOPPED(status)) {
		diag("tracee did not stop: status %#x", status);
		result(0, "ptrace_xstate_full_size");
		skip("ptrace_sw_reserved_kernel_xcr0", "no stop");
		skip("ptrace_setregset_cont_override_intact", "no stop");
		return;
	}
	ok_size = ptrace(PTRACE_GETREGSET, pid, NT_X86_XSTATE, &iov) == 0 &&
		  iov.iov_len == ksize;
	if (!ok_size)
		diag("GETREGSET: len %zu, expected %u (%s)", iov.iov_len, ksize, strerror(errno));
	memcpy(&sw, xs + 464, 8);
	ok_sw = sw == kxcr0;
	if (!ok_sw)
		diag("sw_reserved XCR0 word %#llx, expected %#llx", (unsigned long long)sw,
		     (unsigned long long)kxcr0);
	memset(xs + 160 + 16, 0x99, 16);	/* xmm1 */
	ok_cont = ptrace(PTRACE_SETREGSET, pid, NT_X86_XSTATE, &iov) == 0;
	if (!ok_cont)
		diag("SETREGSET: %s", strerror(errno));
	ptrace(PTRACE_CONT, pid, 0, 0);
	waitpid(pid, &status, 0);
	if (!WIFEXITED(status) || WEXITSTATUS(status)) {
		diag("tracee after CONT: status %#x (21: XCR0, 22: xmm0, 24: xmm1 not written)",
		     status);
		ok_cont = 0;
	}
	if (!feature)
		diag("no override available: tracee uses the kernel's XCR0");
	result(ok_size, "ptrace_xstate_full_size");
	result(ok_sw, "ptrace_sw_reserved_kernel_xcr0");
	if (!feature)
		skip("ptrace_setregset_cont_override_intact", "%s", nofeat);
	else
		result(ok_cont, "ptrace_setregset_cont_override_intact");
}

/* ------------------------------------------------------------------ */
/* Group 10: fork, vfork, threads, clone, execve                       */

static void *thread_check(void *p)
{
	uint64_t want = *(uint64_t *)p;

	return (void *)(long)(xgetbv0() == want && get_xcr0() == want);
}

static void *thread_change(void *p)
{
	return (void *)(long)(set_xcr0(kxcr0) == 0 && xgetbv0() == kxcr0);
}

static int wait_ok(pid_t pid)
{
	int status;

	if (pid < 0 || waitpid(pid, &status, 0) != pid)
		return 0;
	return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

static char *self_exe = "/proc/self/exe";

static void group10(void)
{
	uint64_t v = reduced;
	void *ret;
	pthread_t t;
	pid_t pid;
	int ok;

	if (!feature) {
		skip("fork_inherits", "%s", nofeat);
		skip("vfork_inherits", "%s", nofeat);
		skip("pthread_inherits", "%s", nofeat);
		skip("raw_clone_inherits", "%s", nofeat);
		skip("child_change_leaves_parent", "%s", nofeat);
		skip("thread_change_leaves_others", "%s", nofeat);
		skip("execve_resets_to_kernel", "%s", nofeat);
		return;
	}
	set_xcr0(v);
	pid = fork();
	if (pid == 0)
		_exit(!(xgetbv0() == v && get_xcr0() == v));
	result(wait_ok(pid), "fork_inherits");

	pid = vfork();
	if (pid == 0)
		_exit(xgetbv0() != v);
	result(wait_ok(pid), "vfork_inherits");

	ok = pthread_create(&t, NULL, thread_check, &v) == 0 &&
	     pthread_join(t, &ret) == 0 && ret;
	result(ok, "pthread_inherits");

	pid = syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0);
	if (pid == 0)
		syscall(SYS_exit, !(xgetbv0() == v && get_xcr0() == v));
	result(wait_ok(pid), "raw_clone_inherits");

	pid = fork();
	if (pid == 0)
		_exit(!(set_xcr0(kxcr0) == 0 && xgetbv0() == kxcr0));
	ok = wait_ok(pid) && check_xcr0_is(v, "parent after child's SET");
	result(ok, "child_change_leaves_parent");

	ok = pthread_create(&t, NULL, thread_change, NULL) == 0 &&
	     pthread_join(t, &ret) == 0 && ret;
	ok &= check_xcr0_is(v, "thread after sibling's SET");
	result(ok, "thread_change_leaves_others");

	pid = fork();
	if (pid == 0) {
		char *argv[] = { self_exe, "--exec-child", NULL };

		execve(self_exe, argv, environ);
		_exit(3);
	}
	result(wait_ok(pid), "execve_resets_to_kernel");
	back_to_kernel();
}

static int exec_child(void)
{
	uint64_t supp = 0, g = 0;

	arch_prctl(ARCH_GET_XCOMP_SUPP, (unsigned long)&supp);
	arch_prctl(ARCH_GET_XCR0, (unsigned long)&g);
	if (xgetbv0() != supp || g != supp) {
		printf("# exec child: XGETBV %#llx GET %#llx, kernel %#llx\n",
		       (unsigned long long)xgetbv0(), (unsigned long long)g,
		       (unsigned long long)supp);
		return 1;
	}
	return 0;
}

/* ------------------------------------------------------------------ */

int main(int argc, char **argv)
{
	unsigned int a, b, c, d;
	int reexec_failed = 0;
	long r;

	if (argc > 1 && !strcmp(argv[1], "--exec-child"))
		return exec_child();
	if (!getenv("XCR0_TEST_REEXEC")) {
		const char *execfn = (const char *)getauxval(AT_EXECFN);

		/* libc must not use AVX string functions while XCR0 is lowered */
		setenv("XCR0_TEST_REEXEC", "1", 1);
		setenv("GLIBC_TUNABLES", TUNABLES, 1);
		execv("/proc/self/exe", argv);
		if (execfn)
			execv(execfn, argv);
		/* carry on if that fails */
		reexec_failed = 1;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("TAP version 13\n");
	if (reexec_failed)
		diag("re-exec with GLIBC_TUNABLES failed: libc may use AVX while XCR0 is lowered");

	cpuid_count(1, 0, &a, &b, &c, &d);
	have_xsave = !!(c & (1U << 27));
	cpuid_count(7, 0, &a, &b, &c, &d);
	have_ospke = !!(c & (1U << 4));
	ncpus = sysconf(_SC_NPROCESSORS_ONLN);
	if (ncpus < 1)
		ncpus = 1;
	if (!have_xsave) {
		printf("1..0 # SKIP no OSXSAVE\n");
		return 4;
	}
	kxcr0 = xgetbv0();
	if (arch_prctl(ARCH_GET_XCOMP_SUPP, (unsigned long)&xcomp_supp))
		xcomp_supp = kxcr0;
	reduced = XF_X87 | XF_SSE;
	r = arch_prctl(ARCH_GET_XCR0, (unsigned long)&kxcr0);
	if (r == 0) {
		feature = 1;
	} else {
		nofeat = errno == EINVAL ? "kernel lacks ARCH_GET_XCR0 (EINVAL)" :
			 "ARCH_GET_XCR0 failed";
		kxcr0 = xgetbv0();
	}
	cpuid_count(0xd, 0, &a, &b, &c, &d);
	diag("XCR0 %#llx, CPUID(0xD,0) EAX %#x EBX %u EDX %#x, %d CPUs, feature %s",
	     (unsigned long long)kxcr0, a, b, d, ncpus, feature ? "present" : "absent");
	printf("1..%d\n", NCASES);

	group1();
	group2();
	group3();
	group4();
	group5();
	group6();
	group7();
	group8();
	group9();
	group10();

	if (test_no != NCASES)
		diag("plan mismatch: ran %d cases", test_no);
	printf("# Totals: pass:%d fail:%d xfail:0 xpass:0 skip:%d error:0\n",
	       n_pass, n_fail, n_skip);
	if (n_fail || test_no != NCASES)
		return 1;
	return n_pass ? 0 : 4;
}
