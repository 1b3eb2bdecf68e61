"""HTTP servers for the download tests, on 127.0.0.1 only, each stopped by its context manager.

``serve(routes)`` answers each path with a scripted list of replies, one per
request (the last one repeats), and counts the requests; ``silent_listener()``
accepts connections and never answers. Nothing here contacts any other address.
"""

import contextlib
import http.server
import socket
import threading
from dataclasses import dataclass

#: Longest a stalling reply waits (the tests' timeouts are far shorter).
STALL_SECONDS = 20.0


@dataclass(frozen=True)
class Reply:
    """One scripted reply.

    Attributes:
        status: int. HTTP status.
        body: bytes. What is sent.
        length: int or None. Content-Length claimed (default ``len(body)``).
        stall: bool. After the body, hold the connection open without sending.
    """

    status: int = 200
    body: bytes = b""
    length: int | None = None
    stall: bool = False


@contextlib.contextmanager
def serve(routes):
    """A threaded HTTP server on 127.0.0.1 with scripted replies.

    Args:
        routes: dict ``path -> list of Reply``.

    Yields:
        ``(base_url, hits)``: ``"http://127.0.0.1:PORT"`` and a dict
        ``path -> number of requests``.
    """
    hits = {path: 0 for path in routes}
    stop = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            replies = routes.get(self.path)
            if replies is None:
                self.send_error(404)
                return
            reply = replies[min(hits[self.path], len(replies) - 1)]
            hits[self.path] += 1
            self.send_response(reply.status)
            length = len(reply.body) if reply.length is None else reply.length
            self.send_header("Content-Length", str(length))
            self.end_headers()
            self.wfile.write(reply.body)
            self.wfile.flush()
            if reply.stall:
                stop.wait(STALL_SECONDS)
            self.close_connection = True

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", hits
    finally:
        stop.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


@contextlib.contextmanager
def silent_listener():
    """A socket on 127.0.0.1 that completes TCP connections and never answers.

    Yields:
        str. ``"http://127.0.0.1:PORT"``.
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()
