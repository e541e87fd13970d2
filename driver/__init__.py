"""nbio: the talk's sink server and large-payload client in several frameworks, tested and
measured side by side. One import root, three floors:

- ``nbio`` (this folder): the command line and what drives implementations as processes:
  the registry, bench, compare, reports and charts, process usage, the reference;
- ``nbio.asyncio_impl``, ``nbio.twisted_impl``, … (the ``*_impl/`` folders of the
  repository): one implementation each, the same modules and functions in every one;
- ``nbio.common`` (``common/``): the framework-free core they share, which opens no socket.
"""
