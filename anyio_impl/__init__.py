"""The sink server and large-payload client on anyio, one API over asyncio and trio: a
TCP listener whose accepted ``SocketStream`` is read with ``receive`` until
``EndOfStream``, and ``connect_tcp`` with ``send`` for the client, on the asyncio backend
(``--loop default`` or ``uvloop``) or the trio backend (``--loop trio``).

The same modules, functions and sections as every implementation package (a test checks
the mirror): server.py, client.py, loops.py, ticker.py.
"""
