"""A Lambda Runtime API (2018-06-01) emulator for driving a real runtime process.

It behaves like AWS's (and like aws-lambda-runtime-interface-emulator where the
docs are silent): a queue of invocations; GET /runtime/invocation/next blocks
until one is queued and answers 200 with the event and the Lambda-Runtime-*
headers; POST .../{id}/response and .../{id}/error answer 202 {"status":"OK"};
an unknown id, or a second answer for the same id, gets 400
{"errorMessage":"Invalid request ID","errorType":"InvalidRequestID"}; an answer
over 6 MiB gets 413 RequestEntityTooLarge; POST /runtime/init/error answers 202.
Unknown paths get 404.

    with runtime_api.Emulator() as emu:          # serving at once; emu.address "127.0.0.1:PORT"
        rid = emu.enqueue({"Records": []})       # bytes | str | dict (JSON-encoded)
        res = emu.wait_result(rid, timeout=60)   # Result: .kind "response"|"error", .body,
                                                 #   .headers (lower-case keys), .json()
        err = emu.wait_init_error(timeout=10)    # Result (kind "error", request_id None)

Variants, plain attributes, may be changed between invocations:
    chunked               bodies go out with Transfer-Encoding: chunked, in chunks of
                          varying size (1 B to 1 MiB)
    chunk_ext             with chunked: chunk extensions and a trailer field too
    close_after_response  close the connection after every answer ...
    close_header          ... and, with it, say "Connection: close" (False: close silently)
    keepalive             False: "Connection: close" and close after every answer
    lowercase_headers     header names in lower case
    drop_mid_body_once    the next /next sends its head and half its body, then closes;
                          the invocation goes back to the front of the queue
    fail_response_once    the next /response is read, then the connection is closed with
                          no answer, and the event is queued again under a new request id
                          (SQS redelivering a batch whose answer was lost);
                          emu.redelivered maps the old id to the new one
Counters: emu.connections (accepted), emu.next_requests [(time.monotonic(), peer)],
emu.requests_log [(method, path, status)] (status 0: no answer was sent).
"""
import collections
import email.utils
import json
import socket
import socketserver
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PREFIX = "/2018-06-01/runtime"
MAX_PAYLOAD = 6 * 1024 * 1024
DEFAULT_ARN = "arn:aws:lambda:us-east-1:000000000000:function:login-etl"
CHUNK_SIZES = (1, 7, 300, 4096, 65536, 1024 * 1024)
_BODY_LIMIT = 8 * MAX_PAYLOAD  # what we read of a request body at most


class Result:
    """One answer the runtime posted: kind "response" or "error"."""

    def __init__(self, kind, request_id, body, headers, path):
        self.kind = kind
        self.request_id = request_id
        self.body = body
        self.headers = headers
        self.path = path
        self.time = time.monotonic()

    def json(self):
        return json.loads(self.body)

    def failures(self):
        """The set of messageIds the answer lists in batchItemFailures; fails the test when
        the runtime posted an /error instead of an answer."""
        assert self.kind == "response", f"expected an answer, got {self.kind}: {self.body[:300]!r}"
        return {f["itemIdentifier"] for f in self.json()["batchItemFailures"]}

    def __repr__(self):
        return (f"Result(kind={self.kind!r}, request_id={self.request_id!r}, "
                f"body={self.body[:200]!r}{'...' if len(self.body) > 200 else ''})")


class _Invocation:
    __slots__ = ("request_id", "key", "event", "deadline_ms", "timeout_s", "function_arn",
                 "trace_id")


def _trace_id():
    return (f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]};"
            f"Parent={uuid.uuid4().hex[:16]};Sampled=1")


def _error_json(message, error_type):
    return json.dumps({"errorMessage": message, "errorType": error_type}).encode()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def server_bind(self):
        # HTTPServer.server_bind asks getfqdn(), which may wait on DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def handle_error(self, request, client_address):
        pass  # a client that went away is not news; the emulator logs what it needs


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "runtime-api-emulator"

    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.emu._register(self.connection)

    def finish(self):
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self.server.emu._unregister(self.connection)

    def log_message(self, format, *args):
        pass

    def do_GET(self):
        self.server.emu._dispatch(self, "GET")

    def do_POST(self):
        self.server.emu._dispatch(self, "POST")

    def do_PUT(self):
        self.server.emu._dispatch(self, "PUT")

    def do_DELETE(self):
        self.server.emu._dispatch(self, "DELETE")


class Emulator:
    def __init__(self, port=0, host="127.0.0.1", start=True):
        self.host = host
        self.port = port
        # variants
        self.chunked = False
        self.chunk_ext = False
        self.close_after_response = False
        self.close_header = False
        self.keepalive = True
        self.lowercase_headers = False
        self.drop_mid_body_once = False
        self.fail_response_once = False
        # state, under _cond
        self._cond = threading.Condition()
        self._queue = collections.deque()
        self._inflight = {}  # request id -> _Invocation handed out and not answered
        self._results = {}  # request id -> Result
        self._init_errors = []
        self.redelivered = {}  # old request id -> new request id (fail_response_once)
        self.next_requests = []
        self.requests_log = []
        self.connections = 0
        self._socks = set()
        self._closed = False
        self._server = None
        self._thread = None
        if start:
            self.start()

    # ---- life cycle ----------------------------------------------------------------------

    @property
    def address(self):
        return f"{self.host}:{self.port}"

    def start(self):
        if self._server:
            return self
        self._server = _Server((self.host, self.port), _Handler)
        self._server.emu = self
        self.port = self._server.server_address[1]
        self._closed = False
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        name=f"runtime-api-{self.port}", daemon=True)
        self._thread.start()
        return self

    def close(self):
        """Stops serving and closes every connection; blocked /next polls end."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            socks = list(self._socks)
        if self._server:
            self._server.shutdown()
            self._server.server_close()
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread:
            self._thread.join(5)
        self._server = None
        self._thread = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    def _register(self, sock):
        with self._cond:
            self.connections += 1
            self._socks.add(sock)

    def _unregister(self, sock):
        with self._cond:
            self._socks.discard(sock)

    # ---- the test's side -----------------------------------------------------------------

    def enqueue(self, event, deadline_ms=None, timeout_s=30, request_id=None, function_arn=None,
                trace_id=None):
        """Queues an invocation; returns its request id.  deadline_ms None: dispatch time +
        timeout_s (as AWS does); a str is sent as is.  request_id "" and trace_id "" leave
        those headers out (then the returned id is internal and nothing can answer it)."""
        if isinstance(event, dict) or isinstance(event, list):
            event = json.dumps(event).encode()
        elif isinstance(event, str):
            event = event.encode()
        inv = _Invocation()
        inv.request_id = str(uuid.uuid4()) if request_id is None else request_id
        inv.key = inv.request_id or f"no-request-id-{uuid.uuid4()}"
        inv.event = bytes(event)
        inv.deadline_ms = deadline_ms
        inv.timeout_s = timeout_s
        inv.function_arn = DEFAULT_ARN if function_arn is None else function_arn
        inv.trace_id = _trace_id() if trace_id is None else trace_id
        with self._cond:
            self._queue.append(inv)
            self._cond.notify_all()
        return inv.key

    def wait_result(self, request_id, timeout=60):
        """The answer posted for request_id; raises TimeoutError."""
        with self._cond:
            if not self._cond.wait_for(lambda: request_id in self._results, timeout):
                raise TimeoutError(f"no answer for {request_id} within {timeout}s; "
                                   f"log: {self.requests_log[-10:]}")
            return self._results[request_id]

    def wait_init_error(self, timeout=10):
        """The (latest) init error posted; raises TimeoutError."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._init_errors, timeout):
                raise TimeoutError(f"no init error within {timeout}s")
            return self._init_errors[-1]

    def wait_redelivery(self, request_id, timeout=30):
        """The new request id fail_response_once gave request_id's event."""
        with self._cond:
            if not self._cond.wait_for(lambda: request_id in self.redelivered, timeout):
                raise TimeoutError(f"{request_id} was not redelivered within {timeout}s")
            return self.redelivered[request_id]

    def wait_polling(self, count=1, timeout=10):
        """Waits until /next has been asked `count` times in all."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.next_requests) >= count, timeout):
                raise TimeoutError(f"fewer than {count} /next requests within {timeout}s")

    @property
    def results(self):
        with self._cond:
            return dict(self._results)

    @property
    def queued(self):
        with self._cond:
            return len(self._queue)

    # ---- the runtime's side --------------------------------------------------------------

    def _dispatch(self, h, method):
        path = urllib.parse.urlsplit(h.path).path
        try:
            if path == PREFIX + "/invocation/next":
                if method != "GET":
                    return self._send(h, method, 405, _error_json("Method not allowed",
                                                                  "MethodNotAllowed"))
                return self._next(h)
            if path == PREFIX + "/init/error":
                body = self._read_body(h)
                if body is None or method != "POST":
                    return self._refuse(h, method, body)
                res = Result("error", None, body, self._headers(h), path)
                with self._cond:
                    self._init_errors.append(res)
                    self._cond.notify_all()
                return self._send(h, method, 202, b'{"status":"OK"}')
            parts = path[len(PREFIX):].split("/") if path.startswith(PREFIX + "/") else []
            # ['', 'invocation', id, 'response'|'error']
            if len(parts) == 4 and parts[1] == "invocation" and parts[3] in ("response", "error"):
                body = self._read_body(h)
                if body is None or method != "POST":
                    return self._refuse(h, method, body)
                # ids go out in latin-1 headers (http.server's encoding): the same here
                rid = urllib.parse.unquote(parts[2], encoding="latin-1")
                return self._answer(h, rid, parts[3], body)
            self._read_body(h)
            return self._send(h, method, 404, _error_json("Not found", "NotFound"))
        except (OSError, ValueError):
            h.close_connection = True
            self._log(method, h.path, 0)

    def _refuse(self, h, method, body):
        if body is None:
            return self._send(h, method, 413, _error_json("Request too large", "RequestTooLarge"),
                              close=True)
        return self._send(h, method, 405, _error_json("Method not allowed", "MethodNotAllowed"))

    def _next(self, h):
        peer = "%s:%s" % h.client_address[:2]
        with self._cond:
            self.next_requests.append((time.monotonic(), peer))
            self._cond.notify_all()
            while not self._queue and not self._closed:
                self._cond.wait()
            if self._closed:
                h.close_connection = True
                return
            inv = self._queue.popleft()
            drop = self.drop_mid_body_once
            self.drop_mid_body_once = False
            if not drop:
                self._inflight[inv.key] = inv
        deadline = inv.deadline_ms
        if deadline is None:
            deadline = int(time.time() * 1000) + int(inv.timeout_s * 1000)
        headers = [("Content-Type", "application/json"),
                   ("Lambda-Runtime-Deadline-Ms", str(deadline)),
                   ("Lambda-Runtime-Invoked-Function-Arn", inv.function_arn)]
        if inv.request_id:
            headers.insert(0, ("Lambda-Runtime-Aws-Request-Id", inv.request_id))
        if inv.trace_id:
            headers.append(("Lambda-Runtime-Trace-Id", inv.trace_id))
        if drop:
            try:
                self._send(h, "GET", 200, inv.event, headers, cut=len(inv.event) // 2)
            finally:
                with self._cond:  # it never reached the runtime: serve it again
                    self._queue.appendleft(inv)
                    self._cond.notify_all()
            return
        # A write that fails (the runtime refused an oversized event and closed)
        # leaves the invocation in flight: the runtime answers it with /error.
        self._send(h, "GET", 200, inv.event, headers)

    def _answer(self, h, request_id, kind, body):
        path = urllib.parse.urlsplit(h.path).path
        with self._cond:
            inv = self._inflight.get(request_id)
            fail = kind == "response" and inv is not None and self.fail_response_once
            if fail:
                self.fail_response_once = False
                del self._inflight[request_id]
                new = _Invocation()
                for k in _Invocation.__slots__:
                    setattr(new, k, getattr(inv, k))
                new.request_id = new.key = str(uuid.uuid4())
                self._queue.appendleft(new)
                self.redelivered[request_id] = new.key
                self._cond.notify_all()
        if fail:
            h.close_connection = True
            self._log("POST", path, 0)
            return
        if inv is None:
            return self._send(h, "POST", 400, _error_json("Invalid request ID", "InvalidRequestID"))
        if len(body) > MAX_PAYLOAD:
            res = Result("error", request_id,
                         _error_json("Response payload size exceeded maximum allowed payload "
                                     "size (6291456 bytes).", "Function.ResponseSizeTooLarge"),
                         {"lambda-runtime-function-error-type": "Function.ResponseSizeTooLarge"},
                         path)
            status, reply = 413, _error_json(
                f"Exceeded maximum allowed payload size ({MAX_PAYLOAD} bytes).",
                "RequestEntityTooLarge")
        else:
            res = Result(kind, request_id, body, self._headers(h), path)
            status, reply = 202, b'{"status":"OK"}'
        with self._cond:
            if self._inflight.pop(request_id, None) is None:  # answered meanwhile
                status, reply = 400, _error_json("Invalid request ID", "InvalidRequestID")
            else:
                self._results[request_id] = res
                self._cond.notify_all()
        return self._send(h, "POST", status, reply)

    # ---- HTTP details --------------------------------------------------------------------

    @staticmethod
    def _headers(h):
        return {k.lower(): v for k, v in h.headers.items()}

    def _read_body(self, h):
        """The request body, or None when it is over the limit (then unread)."""
        if "chunked" in h.headers.get("Transfer-Encoding", "").lower():
            parts, total = [], 0
            while True:
                line = h.rfile.readline(65537)
                size = int(line.split(b";")[0].strip(), 16)
                if size == 0:
                    while h.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                total += size
                if total > _BODY_LIMIT:
                    return None
                parts.append(h.rfile.read(size))
                h.rfile.read(2)
        n = int(h.headers.get("Content-Length", "0"))
        if n < 0:
            raise ValueError("negative Content-Length")
        if n > _BODY_LIMIT:
            return None
        return h.rfile.read(n) if n else b""

    def _log(self, method, path, status):
        with self._cond:
            self.requests_log.append((method, path, status))

    def _send(self, h, method, status, body, headers=(), cut=None, close=False):
        """Writes one response as the variants say.  cut: stop after that many body
        bytes and close (a connection dropped mid-body)."""
        reason = {200: "OK", 202: "Accepted", 400: "Bad Request", 404: "Not Found",
                  405: "Method Not Allowed", 413: "Payload Too Large"}.get(status, "Status")
        chunked = self.chunked
        client_close = h.close_connection  # the request said "Connection: close" (or HTTP/1.0)
        close = (close or cut is not None or self.close_after_response or not self.keepalive
                 or client_close)
        say_close = close and cut is None and (self.close_header or not self.keepalive
                                               or client_close)
        hdrs = list(headers)
        if not any(k.lower() == "content-type" for k, _ in hdrs):
            hdrs.append(("Content-Type", "application/json"))
        hdrs.append(("Date", email.utils.formatdate(usegmt=True)))
        if chunked:
            hdrs.append(("Transfer-Encoding", "chunked"))
        else:
            hdrs.append(("Content-Length", str(len(body))))
        if say_close:
            hdrs.append(("Connection", "close"))
        if self.lowercase_headers:
            hdrs = [(k.lower(), v) for k, v in hdrs]
        head = (f"HTTP/1.1 {status} {reason}\r\n" +
                "".join(f"{k}: {v}\r\n" for k, v in hdrs) + "\r\n").encode("latin-1")
        self._log(method, h.path, status if cut is None else 0)
        if close:
            h.close_connection = True
        view = memoryview(body)
        if cut is not None:
            view = view[:cut]
        w = h.wfile
        if not chunked:
            if len(view) <= 65536:
                w.write(head + bytes(view))
            else:
                w.write(head)
                w.write(view)
            return
        out = [head]
        pos, i = 0, 0
        while pos < len(view):
            n = CHUNK_SIZES[i % len(CHUNK_SIZES)]
            i += 1
            piece = view[pos:pos + n]
            pos += len(piece)
            ext = f";n={i};q=\"x y\"" if self.chunk_ext else ""
            out.append(f"{len(piece):x}{ext}\r\n".encode())
            if len(piece) > 65536:
                w.write(b"".join(out))
                w.write(piece)
                out = [b"\r\n"]
            else:
                out.append(bytes(piece))
                out.append(b"\r\n")
        if cut is None:
            out.append(b"0\r\n")
            if self.chunk_ext:
                out.append(b"X-Checksum: none\r\n")
            out.append(b"\r\n")
        w.write(b"".join(out))
