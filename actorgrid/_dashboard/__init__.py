"""The dashboard: a live view of the cluster over HTTP and a WebSocket feed, and ``/metrics``.

Layer: above ``_transport`` (it reuses the listeners' admission limits) and below ``_node``,
which gives it a :class:`~actorgrid._dashboard.source.DashboardSource` (the head's view, its
event stream, the operator actions) and starts it. It knows nothing of runtimes or heads::

    auth.py      the token: HMAC of a fixed label under the cluster secret
    http.py      a bounded HTTP/1.1 request-head parser and response builder (no I/O)
    model.py     what the page and /metrics show, fed events and cluster views (no I/O)
    metrics.py   the Prometheus text rendering of the model (no I/O)
    page.py      the one static HTML page, inline JS, no build step
    server.py    the I/O shell: listener, token check, page, /metrics, WebSocket feed
"""
