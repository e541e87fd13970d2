"""The sink server and large-payload client on Tornado: a ``TCPServer`` whose
``handle_stream`` reads into a buffer until the stream closes, and a client that awaits
every ``IOStream.write``, on the IOLoop (which runs on asyncio's loop, or uvloop).

The same modules, functions and sections as every implementation package (a test checks
the mirror): server.py, client.py, loops.py, ticker.py.
"""
