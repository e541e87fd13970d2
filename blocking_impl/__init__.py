"""The talk's first level, done properly: blocking sockets, one thread per connection, a
reused buffer for ``recv_into`` and ``sendall`` for the client. The plain-sockets baseline
that the frameworks are measured against.

The same modules, functions and sections as every implementation package (a test checks
the mirror): server.py, client.py, loops.py, ticker.py.
"""
