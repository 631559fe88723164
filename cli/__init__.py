"""The ``actorgrid`` command line (installed as ``actorgrid.cli``).

This package sits above everything else: it talks to actorgrid only through the public API
(``import actorgrid as ag``), never through ``actorgrid._*``; ``tests/test_layering.py``
checks that.
"""
