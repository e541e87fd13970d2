"""The sink server and large-payload client on Twisted: a Protocol/Factory sink and a client
whose protocol is its own push producer, on the reactor of your choice.

Siblings with the same module names: asyncio_impl/, tornado_impl/.
"""
