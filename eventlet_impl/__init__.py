"""The sink server and large-payload client on Eventlet: ``eventlet.listen`` and a
``GreenPool`` of green threads for the sink, ``eventlet.connect`` and ``sendall`` for the
client; on Eventlet's own green sockets, no monkey-patching, over the hub ``--loop`` names
(epolls, poll, selects, or the asyncio hub).

Eventlet warns on import that it is deprecated and in bugfix mode. nbio says so once, in
``nbio impls`` and the README, and keeps that warning out of every run's output: the filter
below is installed before anything here imports eventlet.

The same modules, functions and sections as every implementation package (a test checks
the mirror): server.py, client.py, loops.py, ticker.py.
"""

import warnings

# The message, not the category: the category is a class of eventlet's, and naming it here
# would import eventlet before the filter is in place.
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
