"""Runs inside the container, on the image's Python, with only the standard library: the bootstrap that
runs a call, the Swarm connector, the pytest test body and assertion helpers, and the framed protocol that
both ends speak. Nothing here may import the rest of dockertask (see docs/architecture.md)."""
