/* Fault: a "kernel" that triple-faults the CPU as soon as it runs, the way a broken FPU/XSAVE path in early
 * boot dies: no console line, no panic, just a reset. A multiboot image QEMU boots with -kernel; with
 * -no-reboot QEMU exits and QMP's SHUTDOWN event says guest-reset. Built by tests/faultlib.py with
 * `as --32` and `ld -m elf_i386` (binutils only). */
	.section .text
	.align 4
	.long 0x1BADB002		/* multiboot magic */
	.long 0x0			/* flags */
	.long -(0x1BADB002)		/* checksum */
	.globl _start
_start:
	cli
	lidt	idtr			/* an empty interrupt table ... */
	int3				/* ... so this faults, the fault faults, and the CPU resets */
1:	hlt
	jmp	1b
	.align 4
idtr:	.word 0
	.long 0
