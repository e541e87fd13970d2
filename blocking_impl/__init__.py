"""The talk's first level, done properly: blocking sockets, one thread per connection, a
reused buffer for ``recv_into`` and ``sendall`` for the client. The plain-sockets baseline
that the frameworks are measured against.

Siblings with the same module names: asyncio_impl/, twisted_impl/, tornado_impl/,
selectors_impl/.
"""
