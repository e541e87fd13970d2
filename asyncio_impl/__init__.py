"""The sink server and large-payload client on stdlib asyncio, at two levels: streams
(server.py, client.py) and the Protocol/transport API (protocol_server.py, protocol_client.py).

The same modules, functions and sections as every implementation package (a test checks
the mirror): server.py, client.py, loops.py, ticker.py.
"""
