"""checkpatch.pl --strict from the 6.1 tree on the XCR0 series, and on a patch that breaks the rules."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from farm.catalog import Catalog
from farm.kernel.checkpatch import check_series, parse_total, summary

from .conftest import REPO

pytestmark = pytest.mark.build

BAD = """From 1111111111111111111111111111111111111111 Mon Sep 17 00:00:00 2001
From: Someone <someone@example.org>
Date: Thu, 26 Nov 2026 00:00:00 +0000
Subject: [PATCH] x86: do a thing

no sign-off here
---
 arch/x86/kernel/process.c | 1 +
 1 file changed, 1 insertion(+)

diff --git a/arch/x86/kernel/process.c b/arch/x86/kernel/process.c
--- a/arch/x86/kernel/process.c
+++ b/arch/x86/kernel/process.c
@@ -1,3 +1,4 @@
 // SPDX-License-Identifier: GPL-2.0
+int  farm_bad_global = 0 ;<SP><SP><SP>
 #define pr_fmt(fmt) KBUILD_MODNAME ": " fmt
<SP>
 #include <linux/errno.h>
""".replace("<SP>", " ")  # diff context lines and the trailing blanks checkpatch must catch


def test_parse_total():
    assert parse_total("total: 1 errors, 2 warnings, 3 checks, 10 lines checked") == \
        {"errors": 1, "warnings": 2, "checks": 3}
    assert parse_total("nothing")["errors"] is None


def test_xcr0_series_is_clean_and_a_bad_patch_is_reported(tmp_path: Path):
    kernel = Catalog(REPO).kernels["linux-6.1-xcr0"]
    assert kernel.checkpatch
    results = check_series(kernel)
    assert len(results) == 4 and all(r["ok"] for r in results), results
    assert summary(results) == "checkpatch --strict: all 4 patch(es) clean"
    (tmp_path / "bad.patch").write_text(BAD)
    bad = check_series(dataclasses.replace(kernel, patches=(tmp_path / "bad.patch",)))
    assert len(bad) == 1 and not bad[0]["ok"]
    assert bad[0]["errors"] >= 1
    assert any("Signed-off-by" in p or "whitespace" in p for p in bad[0]["problems"])
    assert "1 of 1 patch(es) with problems" in summary(bad)
