"""The sink server and large-payload client on trio: ``trio.serve_tcp`` with a task per
connection reading ``SocketStream.receive_some`` for the sink, ``trio.open_tcp_stream`` and
``send_all`` for the client; structured concurrency, so every task lives in a nursery, and
stopping is cancelling a scope.

The same modules, functions and sections as every implementation package (a test checks
the mirror): server.py, client.py, loops.py, ticker.py.
"""
