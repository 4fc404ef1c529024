"""farm: a QEMU-driven validation farm for Linux kernel patches."""

__version__ = "0.1.0"
