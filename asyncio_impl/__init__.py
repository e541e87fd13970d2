"""The sink server and large-payload client on stdlib asyncio, at two levels: streams
(server.py, client.py) and the Protocol/transport API (protocol_server.py, protocol_client.py).

Siblings with the same module names: twisted_impl/, tornado_impl/.
"""
