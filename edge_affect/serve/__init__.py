"""``edge-affect serve``: the runtime's results over HTTP for programs, and a browser view for people.

A Starlette app served by uvicorn on top of the torch-free runtime: ``/v1/predict`` (one photo, dynamically
batched), streams (``/v1/streams``: Server-Sent Events per frame and an MJPEG overlay), ``/metrics``
(Prometheus text) and a one-page viewer at ``/``. Starlette and uvicorn come from the ``serve`` extra; they are
imported only when the server starts, so ``edge_affect.serve`` stays importable without them.
"""
