"""Messages of runtime environments and jobs (part of the closed union in ``messages.py``).

Packages (zipped folders, named by the sha256 of their content) go from a driver to the head
(``PackagePut``, chunked: no frame is ever larger than ``PACKAGE_CHUNK_BYTES`` of data), and
from the head to each node agent that needs them (``PackageFetch``/``PackageData``), on the
same authenticated links as everything else.
"""

from .wireclass import message

# Bytes of package data in one PackagePut or PackageData frame.
PACKAGE_CHUNK_BYTES = 1 << 20


@message
class RuntimeEnvSpec:
    """A runtime environment as the wire carries it (``ag.init(runtime_env=...)``): packages by
    digest, environment variables, and hooks as cloudpickle bytes. ``key`` names it: workers
    of one key serve only drivers of that key."""

    key: str
    working_dir: str = ""  # package digest, or "" for none
    py_modules: tuple[str, ...] = ()  # package digests
    env_vars: tuple[tuple[str, str], ...] = ()
    worker_setup: bytes | None = None
    node_setup: bytes | None = None
    node_cleanup: bytes | None = None
    label: str = ""  # what the user asked for, for messages


@message
class PackageQuery:
    """Sent by a driver to the head before it uploads a package: answered with PackageHave."""

    rid: int
    digest: str


@message
class PackageHave:
    """Head's reply to PackageQuery: the size it holds of that package, or -1 if none."""

    rid: int
    size: int


@message
class PackagePut:
    """Sent by a driver (``ag.init(runtime_env=...)``, ``actorgrid submit``) to the head: one
    chunk of a package, in order from offset 0; answered with Ack (the last one once the
    content matches its digest)."""

    rid: int
    digest: str
    offset: int
    data: bytes
    last: bool


@message
class PackageFetch:
    """Sent by a node agent to the head: a chunk of a package from ``offset``."""

    rid: int
    digest: str
    offset: int


@message
class PackageData:
    """Head's reply to PackageFetch: the chunk, the package's size, or why not."""

    rid: int
    data: bytes
    size: int
    error: str | None = None


@message
class EnsureEnv:
    """Sent by a driver with a runtime environment to the head, which forwards it to every
    node agent: make its packages, node hooks and workers ready there. Answered with Ack
    once every node's workers of that environment are ready, or with what failed where."""

    rid: int
    env: RuntimeEnvSpec


@message
class ReleaseEnv:
    """Sent by the head to every node agent when the last driver of an environment has left:
    stop its workers, run its node cleanup hook, drop its cache. No reply."""

    key: str


@message
class EnvsHeld:
    """Sent by a node agent on its new link after it rejoined its head: the runtime
    environments it has workers of. A restarted head knows them again, and releases those
    that no process it hears from uses (see ``_node/envhead.py``). No reply."""

    envs: tuple[RuntimeEnvSpec, ...]


@message
class JobSummary:
    """One job as the head keeps it (``actorgrid jobs list``)."""

    job_id: str
    argv: tuple[str, ...]
    # "running", "succeeded", "failed", "stopped"; "ended": a job a restarted head learnt of
    # from its driver (JobRejoin) whose driver left, its exit status unknown.
    state: str
    exit_code: int | None
    start_time: float
    end_time: float | None
    pid: int


@message
class SubmitJob:
    """Sent by ``actorgrid submit``: run ``argv`` as a driver on the head's machine, in the
    unpacked ``working_dir`` package if given. Answered with JobStarted; the submitting link
    then gets the job's output (JobOutput) and its end (JobEnded)."""

    rid: int
    argv: tuple[str, ...]
    working_dir: str = ""
    env_vars: tuple[tuple[str, str], ...] = ()
    follow: bool = True


@message
class JobStarted:
    """Head's reply to SubmitJob: the new job's id, or why it could not start."""

    rid: int
    job_id: str
    error: str | None = None


@message
class JobOutput:
    """Pushed by the head to the link that submitted a job: its output (stdout and stderr
    together, in order), as it comes."""

    job_id: str
    data: bytes


@message
class JobEnded:
    """Pushed by the head to the link that submitted a job when the job's process exits."""

    job_id: str
    exit_code: int


@message
class QueryJobs:
    """Sent by ``actorgrid jobs list``: answered with JobList."""

    rid: int


@message
class JobList:
    """Head's reply to QueryJobs: every job it remembers, oldest first."""

    rid: int
    jobs: tuple[JobSummary, ...]


@message
class QueryJobLogs:
    """Sent by ``actorgrid jobs logs ID``: answered with JobLogs."""

    rid: int
    job_id: str


@message
class JobLogs:
    """Head's reply to QueryJobLogs: the job's output so far (its last bytes if it is long)."""

    rid: int
    data: bytes
    error: str | None = None


@message
class StopJob:
    """Sent by ``actorgrid jobs stop ID`` and by a Ctrl-C at ``actorgrid submit``: stop the
    job's process group (SIGTERM, then SIGKILL after the grace period). Answered with Ack
    once it has exited."""

    rid: int
    job_id: str


@message
class JobRejoin:
    """Sent by a job's driver (``actorgrid submit``; ``ACTORGRID_JOB_ID`` in its environment)
    on its new link after it lost the head: a restarted head lists the job again, running
    until that link closes (its output from before, and its exit status, are not known to
    it). No reply."""

    job_id: str
    argv: tuple[str, ...]
    pid: int
    start_time: float
