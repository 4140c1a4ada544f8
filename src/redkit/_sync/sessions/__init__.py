"""Generated: see :mod:`redkit._sync`."""
