"""The talk's last level, done properly: a small event loop of our own on the stdlib
``selectors`` module (mainloop.py), with the same sink server and client as every framework.

The same modules, functions and sections as every implementation package (a test checks
the mirror): server.py, client.py, loops.py, ticker.py.
"""
