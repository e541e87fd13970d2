"""nbio's framework-free core (``nbio.common``): payloads, sizes, accounting, loop delay,
write bursts, events, the sink's state and the interface every implementation satisfies.
Nothing here imports asyncio, Twisted or Tornado, and nothing here touches a socket (sans-IO,
as h11 does it): it is plain code, tested without one."""
