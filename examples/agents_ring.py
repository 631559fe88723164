"""A ring of named agents passing a token by name: a multi-agent simulation in miniature.

Each agent is a remote coroutine with a mailbox. Agent i forwards the token to agent i+1 by
name; the agent that sees the last hop returns, and the driver collects who held it.
"""

from __future__ import annotations

import time

import actorgrid as ag

AGENTS = 8
HOPS = 2_000


@ag.remote
async def agent(ctx: ag.Context, me: int, n: int, hops: int) -> dict[str, int]:
    held = 0
    async for token in ctx.mailbox:
        held += 1
        if token >= hops:
            return {"agent": me, "final_token": token, "held": held}
        await ctx.send(f"agent-{(me + 1) % n}", token + 1)
    return {"agent": me, "final_token": -1, "held": held}


def main() -> None:
    with ag.init(num_workers=2):
        refs = [agent.options(name=f"agent-{i}").remote(i, AGENTS, HOPS) for i in range(AGENTS)]
        started = time.perf_counter()
        ag.send("agent-0", 0)
        ready, running = ag.wait(refs, num_returns=1, timeout=60)
        elapsed = time.perf_counter() - started
        result = ag.get(ready[0])
        print(f"token made {HOPS} hops in {elapsed:.3f} s ({HOPS / elapsed:,.0f} hops/s): {result}")
        assert result["final_token"] == HOPS
        assert result["agent"] == HOPS % AGENTS
        for ref in running:
            ag.kill(ref)


if __name__ == "__main__":
    main()
