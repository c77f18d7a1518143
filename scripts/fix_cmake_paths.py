#!/usr/bin/env python3
"""Point the CMake export files of pip-installed ROS 2 wheels at this environment.

The PyPI ROS wheels were built in a manylinux container: their installed ``*.cmake`` files name the
build machine's Python include directory (``/opt/python/cp311-cp311/include/python3.11``) and NumPy's
include directory of the build (``.../site-packages/numpy/_core/include`` for NumPy 2,
``numpy/core/include`` for NumPy 1). CMake then refuses the imported targets when building interface
packages. This rewrites both to the paths of the running interpreter and NumPy.

Idempotent: it matches any earlier rewrite too, so it must be re-run whenever NumPy changes
(scripts/setup.sh does). Prints how many files it changed.
"""

import re
import sys
import sysconfig
from pathlib import Path

import numpy

PYTHON_INCLUDE = re.compile(r'/opt/python/cp3\d+-cp3\d+/include/python3\.\d+')
NUMPY_INCLUDE = re.compile(r'[^;"\s]*/site-packages/numpy/_?core/include')


def rewrite(text: str, python_include: str, numpy_include: str) -> str:
    return PYTHON_INCLUDE.sub(python_include, NUMPY_INCLUDE.sub(numpy_include, text))


def main(prefix: str = sys.prefix) -> int:
    python_include = sysconfig.get_paths()['include']
    numpy_include = numpy.get_include()
    changed = 0
    for path in Path(prefix, 'share').rglob('*.cmake'):
        text = path.read_text(errors='surrogateescape')
        new = rewrite(text, python_include, numpy_include)
        if new != text:
            path.write_text(new, errors='surrogateescape')
            changed += 1
    print(f'fix_cmake_paths: {changed} file(s) updated (python include {python_include}, '
          f'numpy include {numpy_include})')
    return 0


if __name__ == '__main__':
    sys.exit(main(*sys.argv[1:]))
