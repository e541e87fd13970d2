"""The sink server and large-payload client on gevent: a ``StreamServer`` whose handler,
a greenlet per connection, reads with ``recv_into``, and a client whose ``sendall`` blocks
its greenlet, which is the backpressure; on gevent's own sockets, no monkey-patching, over
libev (default) or libuv.

The same modules, functions and sections as every implementation package (a test checks
the mirror): server.py, client.py, loops.py, ticker.py.
"""
