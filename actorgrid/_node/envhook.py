"""``python -m actorgrid._node.envhook``: run one ``node_setup``/``node_cleanup`` hook.

The node agent starts this in the environment's folder with its variables set and the hook
(cloudpickle bytes) on stdin, so that a hook that imports the shipped code, hangs or crashes
does so in a process of its own, never in the agent. Exit status 0: the hook returned; 1: it
raised, with its traceback on stderr.
"""

from __future__ import annotations

import sys
import traceback

import cloudpickle


def main() -> None:
    try:
        hook = cloudpickle.loads(sys.stdin.buffer.read())
        hook()
    except Exception:
        traceback.print_exc()
        sys.stderr.flush()
        sys.exit(1)


if __name__ == "__main__":
    main()
