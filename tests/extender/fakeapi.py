"""Moved to :mod:`tests.fakeapi`, the tests' one fake apiserver.

This name stays only for ``tests/extender/test_hostile.py`` (being edited elsewhere as this moved); once it
imports ``tests.fakeapi``, delete this module.
"""

from tests.fakeapi import FakeApiServer, serving

__all__ = ["FakeApiServer", "serving"]
