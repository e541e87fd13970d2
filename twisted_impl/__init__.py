"""The sink server and large-payload client on Twisted: a Protocol/Factory sink and a client
whose protocol is its own push producer, on the reactor of your choice.

The same modules, functions and sections as every implementation package (a test checks
the mirror): server.py, client.py, loops.py, ticker.py.
"""
