"""Pools over the cluster: ``ag.Pool`` (``multiprocessing.Pool``) and ``ag.ActorPool``.

Layer: above ``_node``, below the public API (``tests/test_layering.py``). Built on tasks,
actors and object refs; nothing here changes the runtime.

- ``pool.py``: ``Pool``, its chunking and its dispatcher thread;
- ``chunks.py``: the task every chunk runs in a worker (initializer, shared globals);
- ``results.py``: ``AsyncResult`` and ``IMapIterator``, waited on by threads or Trio tasks;
- ``actorpool.py``: ``ActorPool`` over instances of a worker class;
- ``handlepool.py``: Ray's ``ActorPool`` semantics over given actor handles.
"""
