"""The wire, with no I/O: ids, message classes, codec, framing and handshake.

Layering (imports only go downward; ``tests/test_layering.py`` checks it)::

    actorgrid/__init__.py        public names, re-exported
    actorgrid/_pool              ag.Pool and ag.ActorPool, over tasks and actors
    actorgrid/_node              head, node agent, worker process, embedded cluster
    actorgrid/_dashboard         the live dashboard and /metrics, given a source by _node
    actorgrid/_runtime           per-process core: refs, handles, actors, calls
    actorgrid/_scheduler         pure placement and name-registry state machines
    actorgrid/_transport         bytes in, bytes out: TCP and in-memory frame streams
    actorgrid/_protocol          messages (and their parts: records, operations, calls,
                                 mailboxes, envmessages, observe, ...), codec, framing,
                                 handshake (this package)
    actorgrid/_exceptions        the exception tree
"""
