"""Atomic file writing for the phantom: the library's one implementation, re-exported.

New code imports :func:`VirtualBiopsyLib.atomic_io.write_atomically` directly; this name
stays for the modules (and Training's importers) that import it from here.
"""

from VirtualBiopsyLib.atomic_io import write_atomically

__all__ = ["write_atomically"]
