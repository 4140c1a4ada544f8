"""The sync API's modules, generated from the async source by ``tools/async_to_sync.py``.

Every module here is generated except this one, ``_compat`` and the packages' empty
``__init__`` files; import the public names from :mod:`redkit.sync`.
"""
