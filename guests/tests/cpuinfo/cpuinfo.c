// SPDX-License-Identifier: GPL-2.0
/*
 * cpuinfo: what the CPU model really delivered to this guest.
 *
 * Prints key=value facts (XGETBV(0), CPUID leaf 0xD sizes, feature bits) and
 * a few KTAP cases that check the facts agree with each other.  The farm
 * stores the facts per cell, so a report shows e.g. that Skylake-Server under
 * TCG lost AVX-512 and runs with XCR0 0x207.
 */
#include <cpuid.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static void cpuid(uint32_t leaf, uint32_t sub, uint32_t r[4])
{
	__cpuid_count(leaf, sub, r[0], r[1], r[2], r[3]);
}

static uint64_t xgetbv(uint32_t index)
{
	uint32_t eax, edx;

	asm volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(index));
	return eax | ((uint64_t)edx << 32);
}

static int bit(uint32_t reg, int n)
{
	return (reg >> n) & 1;
}

int main(void)
{
	uint32_t r[4], max_leaf, l1[4], l7[4] = { 0 }, d0[4] = { 0 }, d1[4] = { 0 };
	char vendor[13] = { 0 }, brand[49] = { 0 };
	uint64_t xcr0 = 0, supported = 0;
	uint32_t computed = 0;
	int osxsave, tests = 3, n = 0, failed = 0;

	cpuid(0, 0, r);
	max_leaf = r[0];
	memcpy(vendor, &r[1], 4);
	memcpy(vendor + 4, &r[3], 4);
	memcpy(vendor + 8, &r[2], 4);
	cpuid(1, 0, l1);
	if (max_leaf >= 7)
		cpuid(7, 0, l7);
	cpuid(0x80000000, 0, r);
	if (r[0] >= 0x80000004) {
		for (int i = 0; i < 3; i++) {
			cpuid(0x80000002 + i, 0, r);
			memcpy(brand + 16 * i, r, 16);
		}
	}
	osxsave = bit(l1[2], 27);
	if (osxsave && max_leaf >= 0xd) {
		xcr0 = xgetbv(0);
		cpuid(0xd, 0, d0);
		cpuid(0xd, 1, d1);
		supported = d0[0] | ((uint64_t)d0[3] << 32);
		/* Standard-format size: the end of the furthest enabled component. */
		computed = 576;
		for (int i = 2; i < 63; i++) {
			if (!(xcr0 & (1ULL << i)))
				continue;
			cpuid(0xd, i, r);
			if (r[0] + r[1] > computed)
				computed = r[0] + r[1];
		}
	}

	printf("vendor=%s\n", vendor);
	printf("model_name=%s\n", brand[0] ? brand : "unknown");
	printf("family=%u\n", ((l1[0] >> 8) & 0xf) + ((l1[0] >> 20) & 0xff));
	printf("model=%u\n", ((l1[0] >> 4) & 0xf) | ((l1[0] >> 12) & 0xf0));
	printf("xsave=%d\n", bit(l1[2], 26));
	printf("osxsave=%d\n", osxsave);
	printf("xcr0=0x%llx\n", (unsigned long long)xcr0);
	printf("xcr0_supported=0x%llx\n", (unsigned long long)supported);
	printf("xsave_size=%u\n", d0[1]);
	printf("xsave_max_size=%u\n", d0[2]);
	printf("xsaveopt=%d\n", bit(d1[0], 0));
	printf("xsavec=%d\n", bit(d1[0], 1));
	printf("xsaves=%d\n", bit(d1[0], 3));
	printf("avx=%d\n", bit(l1[2], 28));
	printf("avx2=%d\n", bit(l7[1], 5));
	printf("avx512f=%d\n", bit(l7[1], 16));
	printf("mpx=%d\n", bit(l7[1], 14));
	printf("pku=%d\n", bit(l7[2], 3));
	printf("ospke=%d\n", bit(l7[2], 4));
	printf("amx_tile=%d\n", bit(l7[3], 24));

	printf("TAP version 13\n1..%d\n", tests);
	n++;
	if (!osxsave)
		printf("ok %d xsave_enabled # SKIP the OS did not enable XSAVE (CPUID.1:ECX.OSXSAVE=0)\n", n);
	else
		printf("ok %d xsave_enabled\n", n);

	n++;
	if (!osxsave) {
		printf("ok %d xcr0_within_supported # SKIP no XSAVE\n", n);
	} else if ((xcr0 & ~supported) || (xcr0 & 3) != 3) {
		printf("# xcr0 0x%llx has bits outside CPUID(0xD,0) 0x%llx or lacks x87/SSE\n",
		       (unsigned long long)xcr0, (unsigned long long)supported);
		printf("not ok %d xcr0_within_supported\n", n);
		failed++;
	} else {
		printf("ok %d xcr0_within_supported\n", n);
	}

	n++;
	if (!osxsave) {
		printf("ok %d xsave_size_matches_xcr0 # SKIP no XSAVE\n", n);
	} else if (computed != d0[1]) {
		printf("# CPUID(0xD,0).EBX %u, components enabled in XCR0 end at %u\n", d0[1], computed);
		printf("not ok %d xsave_size_matches_xcr0\n", n);
		failed++;
	} else {
		printf("ok %d xsave_size_matches_xcr0\n", n);
	}
	return failed ? 1 : 0;
}
