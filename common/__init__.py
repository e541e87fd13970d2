"""nbio's framework-free core: payloads, sizes, accounting, loop delay, events, the
implementation interface and its registry. Nothing here imports asyncio, Twisted or Tornado,
and nothing here touches a socket (sans-IO, as h11 does it)."""
