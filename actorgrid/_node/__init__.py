"""Processes: the head, the node agent, the worker process and the embedded cluster."""
