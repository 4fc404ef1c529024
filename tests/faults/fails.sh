#!/bin/sh
# A test that fails every time.
printf 'TAP version 13\n1..2\nok 1 fine\n# expected 0x7, got 0x207\nnot ok 2 broken\n'
exit 1
