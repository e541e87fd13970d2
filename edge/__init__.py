"""What every implementation shares at its edge, where it touches the world: what the
kernel can say about a TCP socket, and how an implementation module runs on its own.
Framework-free, like :mod:`nbio.common`, but not sans-IO: this is the layer that owns
sockets and a terminal."""
