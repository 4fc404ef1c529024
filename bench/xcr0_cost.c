// SPDX-License-Identifier: GPL-2.0
/*
 * What ARCH_SET_XCR0 costs, measured in the guest (bench/xcr0_cost.py builds and runs it). Three phases in
 * one fresh boot, so the static key is off in the first one:
 *   off       no task ever asked for an override (the static key is off)
 *   key-on    one SET(0x3) + SET(kernel) happened: the key is on, nobody has an override
 *   override  this task (and its threads) run with XCR0 = 0x3
 * and in each: a plain syscall (getppid), a context switch between two threads pinned to one CPU
 * (sched_yield ping-pong), and a signal delivered and returned from (raise + empty handler).
 * Prints "figure <phase> <what> <ns per op>" lines; the unpatched kernel gives only the "off" phase.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define ARCH_GET_XCR0 0x1041
#define ARCH_SET_XCR0 0x1042

static uint64_t kxcr0, use_xcr0;
static int feature;

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static void set(uint64_t v)
{
	if (feature && syscall(SYS_arch_prctl, ARCH_SET_XCR0, v)) {
		fprintf(stderr, "SET(%#llx): %s\n", (unsigned long long)v, strerror(errno));
		exit(3);
	}
}

static double syscall_ns(int n)
{
	double t = now();

	for (int i = 0; i < n; i++)
		syscall(SYS_getppid);
	return (now() - t) / n;
}

static void pin(int cpu)
{
	cpu_set_t s;

	CPU_ZERO(&s);
	CPU_SET(cpu, &s);
	sched_setaffinity(0, sizeof(s), &s);
}

static volatile int stop;

static void *yielder(void *p)
{
	pin(0);
	set(use_xcr0);
	while (!stop)
		sched_yield();
	return NULL;
}

/* Two threads on CPU 0 yielding to each other: ns per switch */
static double ctxsw_ns(int n)
{
	pthread_t t;
	double t0;

	pin(0);
	stop = 0;
	pthread_create(&t, NULL, yielder, NULL);
	for (int i = 0; i < 1000; i++)
		sched_yield();
	t0 = now();
	for (int i = 0; i < n; i++)
		sched_yield();
	t0 = (now() - t0) / (2.0 * n);
	stop = 1;
	pthread_join(t, NULL);
	return t0;
}

static void handler(int sig)
{
}

static double signal_ns(int n)
{
	double t;

	signal(SIGUSR1, handler);
	t = now();
	for (int i = 0; i < n; i++)
		raise(SIGUSR1);
	return (now() - t) / n;
}

static void phase(const char *name, int rounds)
{
	double s = 1e30, c = 1e30, g = 1e30;

	set(use_xcr0);
	for (int r = 0; r < rounds; r++) {	/* best of: other guests share the host */
		double v;

		v = syscall_ns(50000);
		s = v < s ? v : s;
		v = ctxsw_ns(5000);
		c = v < c ? v : c;
		v = signal_ns(10000);
		g = v < g ? v : g;
	}
	printf("figure %s syscall %.1f\n", name, s);
	printf("figure %s ctxsw %.1f\n", name, c);
	printf("figure %s signal %.1f\n", name, g);
	fflush(stdout);
}

int main(int argc, char **argv)
{
	int rounds = argc > 1 ? atoi(argv[1]) : 5;

	/* glibc's AVX string functions would fault while XCR0 is 0x3 */
	if (!getenv("GLIBC_TUNABLES")) {
		setenv("GLIBC_TUNABLES", "glibc.cpu.hwcaps=-AVX_Fast_Unaligned_Load,-AVX,-AVX2,-AVX512F,"
		       "-AVX512VL,-AVX512BW,-AVX512DQ,-AVX512CD,-FMA,-FMA4,-XSAVEC", 1);
		execv("/proc/self/exe", argv);
	}
	feature = syscall(SYS_arch_prctl, ARCH_GET_XCR0, &kxcr0) == 0;
	printf("# feature %s, kernel XCR0 %#llx\n", feature ? "present" : "absent", (unsigned long long)kxcr0);
	use_xcr0 = kxcr0;
	phase("off", rounds);
	if (!feature)
		return 0;
	set(0x3);
	set(kxcr0);
	phase("key-on", rounds);
	use_xcr0 = 0x3;
	phase("override", rounds);
	return 0;
}
