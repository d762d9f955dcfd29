"""The one compiled part: gateway._idscan (ID translation's JSON scanner, gateway/_idscan.c).

Everything else is in pyproject.toml. The extension is optional: without a C compiler the
package still installs and translation takes its parsed-value path (slower, same answers).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "gateway._idscan",
            sources=["gateway/_idscan.c"],
            extra_compile_args=["-O3", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
            optional=True,
        )
    ]
)
