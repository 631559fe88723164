"""Runtime environments: what a driver's workers need beyond the cluster's own install.

No sockets and no trio here: ``packing`` turns folders into content-hashed zip packages and
back (the file system is its only I/O), ``spec`` checks a user's ``runtime_env`` dict and
turns it into the wire's :class:`RuntimeEnvSpec` plus the packages it names. Shipping the
packages and starting workers is the node layer's job (``_node/envhead.py``,
``_node/envnode.py``).
"""
