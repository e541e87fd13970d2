"""The talk's last level, done properly: a small event loop of our own on the stdlib
``selectors`` module (loop.py), with the same sink server and client as every framework.

Siblings with the same module names: asyncio_impl/, twisted_impl/, tornado_impl/.
"""
