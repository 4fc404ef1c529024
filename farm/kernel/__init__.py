"""Building kernels from source: unpack, patch, configure, make, and a content-addressed cache.

One module per concern, like kunit_tool and TuxMake:
  source.py   the pristine tree (Debian tarball unpacked once, a git repo or a plain folder) and the
              per-series work tree that is patched
  patches.py  quilt series / mbox / git format-patch files: parsing, checking, applying
  config.py   base config + fragments with merge_config.sh, and the check that every option asked for is set
  cache.py    the content key and the kernel cache under paths.cache_root()/kernels/<key>/
  build.py    build_kernel(): the whole pipeline, BuiltKernel, BuildError
  run.py      running and recording commands (the build log and the commands that reproduce a build)
"""

from .errors import BuildError

__all__ = ["BuildError"]
