"""Pools over the cluster: ``ag.Pool`` (``multiprocessing.Pool``) and ``ag.ActorPool``.

Layer: above ``_node`` (a pool reads the cluster's workers to size itself), below the public
API. Both are built on tasks, actors and object refs; neither adds anything to the runtime.
"""
