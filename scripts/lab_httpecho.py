"""HTTP/1.1 and WebSocket test servers for the flowdog lab (scripts/lab.sh runs both in the
server namespace).

    lab_httpecho.py http PORT PIDFILE ADDR...   HTTP/1.1 server, standard library only
    lab_httpecho.py ws PORT PIDFILE ADDR...     WebSocket echo (needs the "websockets" package)

One listening socket per address, as in the lab's echo.py, so that a reply leaves from the
address the request went to. The pid file is written once every socket listens. Logs go to
stderr (lab.sh sends them to a file in its state dir).

The HTTP server parses requests itself from the socket's bytes: http.server would normalise
what a test wants to see (header-name case, framing) and accepts what it should refuse. It is
strict on purpose, so that a middlebox that mangles a request shows up as a 400:

  GET /headers      200 text/plain; the body is the request head exactly as received: the
                    request line and the header lines up to and including the blank line.
  POST|PUT /upload  reads the body (Content-Length or chunked; "100 Continue" first when the
                    request has "Expect: 100-continue"), hashes it as it streams in and answers
                    200 application/json {"sha256": "<hex>", "bytes": N}.
  GET /stream/N     N bytes, byte i being i % 251, in 64 KiB chunks of chunked transfer coding
                    (an HTTP/1.0 client gets Content-Length instead: it cannot read chunked).
  HEAD              like GET without the body.

Every line must end in CRLF; HTTP/1.1 requests need exactly one Host header; Content-Length and
Transfer-Encoding together, differing Content-Lengths, obs-fold, whitespace before a header's
colon, a transfer coding other than a final "chunked", and anything else malformed get 400 and
the connection closed. Keep-alive (with pipelining) for HTTP/1.1 unless "Connection: close";
HTTP/1.0 is closed after the response; a connection idle for 60 s is closed.

The WebSocket server echoes every message with its type (text or binary), answers pings (the
library does) and closes cleanly when the client closes. It never pings on its own, so that a
test sees nothing but its echoes. Messages up to 16 MiB.
"""
import hashlib
import logging
import os
import re
import selectors
import socket
import sys
import threading

IDLE_TIMEOUT = 60.0
MAX_LINE = 16 * 1024  # one request line or header line
MAX_HEAD = 64 * 1024  # the whole head
MAX_HEADERS = 128
READ_SIZE = 256 * 1024
STREAM_CHUNK = 64 * 1024
WS_MAX_SIZE = 16 * 1024 * 1024

TCHAR = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]"
METHOD_RE = re.compile(rb"%s+" % TCHAR)
TARGET_RE = re.compile(rb"[\x21-\x7e]+")
VERSION_RE = re.compile(rb"HTTP/([0-9])\.([0-9])")
# field-name ":" OWS field-value OWS; the value has no control characters but HTAB.
HEADER_RE = re.compile(rb"(%s+):[ \t]*([^\x00-\x08\x0a-\x1f\x7f]*?)[ \t]*" % TCHAR)
CHUNK_SIZE_RE = re.compile(rb"([0-9A-Fa-f]{1,15})[ \t]*(?:;[^\x00-\x08\x0a-\x1f\x7f]*)?")
STREAM_RE = re.compile(r"/stream/([0-9]{1,15})")

# Byte i of a /stream body is i % 251: a chunk starting at offset o is PATTERN[o % 251:][:len].
PATTERN = bytes(i % 251 for i in range(251)) * (STREAM_CHUNK // 251 + 2)

REASONS = {
    100: "Continue", 200: "OK", 400: "Bad Request", 404: "Not Found",
    405: "Method Not Allowed", 408: "Request Timeout", 411: "Length Required",
    417: "Expectation Failed", 431: "Request Header Fields Too Large",
    501: "Not Implemented", 505: "HTTP Version Not Supported",
}

log = logging.getLogger("httpecho")


class BadRequest(Exception):
    """Ends the connection after a response with this status (400 unless told)."""

    def __init__(self, why, status=400):
        super().__init__(why)
        self.status = status


class PeerGone(Exception):
    """The client closed (or reset) the connection: nothing more can be said to it."""


def bound(addr, port):
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if fam == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind((addr, port))
    s.listen(128)
    return s


def write_pidfile(pidfile):
    with open(pidfile + ".tmp", "w") as f:
        f.write(f"{os.getpid()}\n")
    os.rename(pidfile + ".tmp", pidfile)


def fmt_addr(a):
    return f"[{a[0]}]:{a[1]}" if ":" in a[0] else f"{a[0]}:{a[1]}"


class Conn:
    """One client connection: requests read one after the other from a buffered reader."""

    def __init__(self, sock, peer):
        self.sock = sock
        self.peer = fmt_addr(peer)
        self.local = fmt_addr(sock.getsockname())
        self.rfile = sock.makefile("rb", buffering=READ_SIZE)

    # --- reading -------------------------------------------------------------------------

    def readline(self, what, first=False):
        """A line ending in CRLF, with its CRLF. None at a clean end of stream if first."""
        try:
            line = self.rfile.readline(MAX_LINE + 1)
        except TimeoutError:
            if first:
                return None  # idle keep-alive connection: just close it
            raise BadRequest(f"timed out reading the {what}", 408)
        except OSError as e:
            raise PeerGone(str(e))
        if not line:
            if first:
                return None
            raise PeerGone(f"end of stream in the {what}")
        if not line.endswith(b"\n"):
            if len(line) > MAX_LINE:
                raise BadRequest(f"{what} longer than {MAX_LINE} bytes", 431)
            raise PeerGone(f"end of stream in the {what}")
        if not line.endswith(b"\r\n") or b"\r" in line[:-2]:
            raise BadRequest(f"{what} not terminated by CRLF (or a bare CR in it)")
        return line

    def read_some(self, n):
        """Up to n (> 0) body bytes, at least one."""
        try:
            d = self.rfile.read1(min(n, READ_SIZE))
        except TimeoutError:
            raise BadRequest("timed out reading the body", 408)
        except OSError as e:
            raise PeerGone(str(e))
        if not d:
            raise PeerGone("end of stream in the body")
        return d

    def read_exact(self, n):
        parts = []
        while n > 0:
            d = self.read_some(n)
            parts.append(d)
            n -= len(d)
        return b"".join(parts)

    def read_head(self):
        """(raw head bytes, method, target, (major, minor), [(name, value)]) or None at EOF."""
        line = self.readline("request line", first=True)
        # RFC 9112 2.2: a server SHOULD ignore at least one empty line before the request line
        # (old clients send CRLF after a POST body). They are not part of the head echoed back.
        for _ in range(4):
            if line != b"\r\n":
                break
            line = self.readline("request line", first=True)
        if line is None:
            return None
        if line == b"\r\n":
            raise BadRequest("empty lines instead of a request line")
        raw = [line]
        parts = line[:-2].split(b" ")
        if len(parts) != 3:
            raise BadRequest("request line is not METHOD SP TARGET SP VERSION")
        method, target, version = parts
        if not METHOD_RE.fullmatch(method):
            raise BadRequest("bad method")
        if not TARGET_RE.fullmatch(target):
            raise BadRequest("bad request target")
        m = VERSION_RE.fullmatch(version)
        if not m:
            raise BadRequest("bad HTTP version")
        ver = (int(m.group(1)), int(m.group(2)))
        if ver not in ((1, 0), (1, 1)):
            raise BadRequest(f"HTTP/{ver[0]}.{ver[1]} is not supported", 505)
        headers = []
        size = len(line)
        while True:
            line = self.readline("header line")
            raw.append(line)
            size += len(line)
            if size > MAX_HEAD:
                raise BadRequest(f"request head longer than {MAX_HEAD} bytes", 431)
            if line == b"\r\n":
                break
            if len(headers) >= MAX_HEADERS:
                raise BadRequest(f"more than {MAX_HEADERS} header lines", 431)
            if line[:1] in (b" ", b"\t"):
                raise BadRequest("obsolete line folding")
            h = HEADER_RE.fullmatch(line[:-2])
            if not h:
                raise BadRequest(f"malformed header line {line[:60]!r}")
            headers.append((h.group(1).decode("ascii"), h.group(2)))
        return b"".join(raw), method.decode("ascii"), target.decode("ascii"), ver, headers

    def body_reader(self, ver, headers):
        """A generator of the request body's pieces, as framed by the head; validates it."""
        te = [v for n, v in headers if n.lower() == "transfer-encoding"]
        cl = [v for n, v in headers if n.lower() == "content-length"]
        if te:
            if ver < (1, 1):
                raise BadRequest("Transfer-Encoding in an HTTP/1.0 request")
            if cl:
                raise BadRequest("both Transfer-Encoding and Content-Length")
            codings = [c.strip().lower() for v in te for c in v.split(b",")]
            if any(not c for c in codings):
                raise BadRequest("empty transfer coding")
            if codings[-1] != b"chunked":
                raise BadRequest("the final transfer coding is not chunked")
            if len(codings) > 1:
                raise BadRequest(f"transfer codings {codings} not supported", 501)
            return self.chunked_body()
        if cl:
            values = {c.strip() for v in cl for c in v.split(b",")}
            if len(values) != 1:
                raise BadRequest("differing Content-Length values")
            v = values.pop()
            if not re.fullmatch(rb"[0-9]{1,18}", v):
                raise BadRequest("bad Content-Length")
            return self.sized_body(int(v))
        return self.sized_body(0)

    def sized_body(self, n):
        while n > 0:
            d = self.read_some(n)
            n -= len(d)
            yield d

    def chunked_body(self):
        while True:
            line = self.readline("chunk size line")
            m = CHUNK_SIZE_RE.fullmatch(line[:-2])
            if not m:
                raise BadRequest(f"bad chunk size line {line[:40]!r}")
            n = int(m.group(1), 16)
            if n == 0:
                break
            while n > 0:
                d = self.read_some(n)
                n -= len(d)
                yield d
            if self.read_exact(2) != b"\r\n":
                raise BadRequest("chunk data not followed by CRLF")
        # The trailer section: header lines (ignored) up to an empty line.
        for _ in range(MAX_HEADERS + 1):
            line = self.readline("trailer line")
            if line == b"\r\n":
                return
            if not HEADER_RE.fullmatch(line[:-2]):
                raise BadRequest(f"malformed trailer line {line[:60]!r}")
        raise BadRequest("too many trailer lines", 431)

    # --- writing -------------------------------------------------------------------------

    def send(self, data):
        try:
            self.sock.sendall(data)
        except OSError as e:  # a timeout included: the client stopped reading
            raise PeerGone(str(e))

    def respond(self, status, ctype, body, close, head_only=False, extra=()):
        lines = [f"HTTP/1.1 {status} {REASONS[status]}", "Server: flowdog-lab-httpecho"]
        if ctype:
            lines.append(f"Content-Type: {ctype}")
        lines.append(f"Content-Length: {len(body)}")
        lines.extend(extra)
        lines.append("Connection: close" if close else "Connection: keep-alive")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.send(head if head_only else head + body)

    def send_stream(self, n, chunked, close, head_only):
        lines = ["HTTP/1.1 200 OK", "Server: flowdog-lab-httpecho",
                 "Content-Type: application/octet-stream"]
        lines.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {n}")
        lines.append("Connection: close" if close else "Connection: keep-alive")
        self.send(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if head_only:
            return
        off = 0
        while off < n:
            k = min(STREAM_CHUNK, n - off)
            s = off % 251
            data = PATTERN[s:s + k]
            self.send(b"%x\r\n%s\r\n" % (k, data) if chunked else data)
            off += k
        if chunked:
            self.send(b"0\r\n\r\n")

    def lingering_close(self):
        """Closes without an RST: unread request bytes (after a 400, say) in the receive queue
        would make close() send one, and the client could lose the response."""
        try:
            self.sock.shutdown(socket.SHUT_WR)
            self.sock.settimeout(2.0)
            for _ in range(64):
                if not self.sock.recv(65536):
                    break
        except OSError:
            pass

    # --- serving -------------------------------------------------------------------------

    def serve(self):
        try:
            while self.serve_one():
                pass
        except PeerGone as e:
            log.info("%s -> %s: closed: %s", self.peer, self.local, e)
        except Exception:  # a bug here must not kill the server, only this connection
            log.exception("%s -> %s: internal error", self.peer, self.local)
        finally:
            self.lingering_close()
            try:
                self.rfile.close()
            finally:
                self.sock.close()

    def serve_one(self):
        """Answers one request; False when the connection is to be closed."""
        try:
            req = self.read_head()
        except BadRequest as e:
            self.refuse(e, "-")
            return False
        if req is None:
            return False
        head, method, target, ver, headers = req
        tokens = {t.strip().lower() for n, v in headers if n.lower() == "connection"
                  for t in v.split(b",")}
        close = ver < (1, 1) or b"close" in tokens
        what = f"{method} {target} HTTP/{ver[0]}.{ver[1]}"
        try:
            hosts = [v for n, v in headers if n.lower() == "host"]
            if len(hosts) > 1 or (ver >= (1, 1) and len(hosts) != 1):
                raise BadRequest("an HTTP/1.1 request needs exactly one Host header")
            body = self.body_reader(ver, headers)
            expect = [v.lower() for n, v in headers if n.lower() == "expect"]
            if expect and ver >= (1, 1):
                if expect != [b"100-continue"]:
                    raise BadRequest(f"unknown expectation {expect}", 417)
                # Asked for before the body is sent: say yes (whatever the path; a request
                # that is refused afterwards has its body read and dropped all the same).
                self.send(b"HTTP/1.1 100 Continue\r\n\r\n")
            return self.route(method, target, ver, head, body, close, what)
        except BadRequest as e:
            self.refuse(e, what)
            return False

    def refuse(self, e, what):
        log.info("%s -> %s: %s: %d %s", self.peer, self.local, what, e.status, e)
        self.respond(e.status, "text/plain", f"{REASONS[e.status]}: {e}\n".encode(), close=True)

    def route(self, method, target, ver, head, body, close, what):
        path = target
        m = re.fullmatch(r"https?://[^/?#]*(.*)", target, re.IGNORECASE)
        if m:  # absolute-form (sent to a proxy)
            path = m.group(1) or "/"
        if not path.startswith("/"):
            raise BadRequest("request target is not an absolute path")
        path = path.split("?", 1)[0]
        head_only = method == "HEAD"
        if path == "/upload":
            if method not in ("POST", "PUT"):
                return self.not_allowed(method, "POST, PUT", body, close, what)
            h = hashlib.sha256()
            n = 0
            for d in body:
                h.update(d)
                n += len(d)
            out = f'{{"sha256": "{h.hexdigest()}", "bytes": {n}}}\n'.encode()
            self.respond(200, "application/json", out, close)
            log.info("%s -> %s: %s: 200 upload of %d bytes", self.peer, self.local, what, n)
            return not close
        for _ in body:  # a body nobody wants: read it to find the next request
            pass
        if path == "/headers":
            if method not in ("GET", "HEAD"):
                return self.not_allowed(method, "GET, HEAD", body, close, what)
            self.respond(200, "text/plain", head, close, head_only)
            log.info("%s -> %s: %s: 200 headers", self.peer, self.local, what)
            return not close
        m = STREAM_RE.fullmatch(path)
        if m:
            if method not in ("GET", "HEAD"):
                return self.not_allowed(method, "GET, HEAD", body, close, what)
            n = int(m.group(1))
            self.send_stream(n, chunked=ver >= (1, 1), close=close, head_only=head_only)
            log.info("%s -> %s: %s: 200 stream of %d bytes", self.peer, self.local, what, n)
            return not close
        self.respond(404, "text/plain", b"Not Found\n", close, head_only)
        log.info("%s -> %s: %s: 404", self.peer, self.local, what)
        return not close

    def not_allowed(self, method, allow, body, close, what):
        for _ in body:
            pass
        self.respond(405, "text/plain", b"Method Not Allowed\n", close, method == "HEAD",
                     extra=(f"Allow: {allow}",))
        log.info("%s -> %s: %s: 405", self.peer, self.local, what)
        return not close


def serve_client(sock, peer):
    sock.settimeout(IDLE_TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    Conn(sock, peer).serve()


def main_http(port, pidfile, addrs):
    sel = selectors.DefaultSelector()
    for a in addrs:
        s = bound(a, port)
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    write_pidfile(pidfile)
    log.info("http: listening on port %d of %s", port, " ".join(addrs))
    while True:
        for key, _ in sel.select():
            try:
                c, peer = key.fileobj.accept()
            except OSError:
                continue
            c.setblocking(True)
            threading.Thread(target=serve_client, args=(c, peer), daemon=True).start()


def main_ws(port, pidfile, addrs):
    import asyncio

    import websockets  # Debian 12: python3-websockets 10.4 (the legacy asyncio API)

    async def echo(ws):
        # One argument: websockets >= 10.1 passes no path to a handler that takes none.
        peer = fmt_addr(ws.remote_address)
        log.info("ws %s: open, path %s", peer, ws.path)
        n = 0
        try:
            async for msg in ws:  # str for a text message, bytes for a binary one
                await ws.send(msg)  # sent back with the same type
                n += 1
        except websockets.ConnectionClosed:
            pass
        log.info("ws %s: closed (code %s), %d messages echoed", peer, ws.close_code, n)

    async def run():
        servers = []
        for a in addrs:
            s = bound(a, port)
            servers.append(await websockets.serve(echo, sock=s, ping_interval=None,
                                                  max_size=WS_MAX_SIZE))
        write_pidfile(pidfile)
        log.info("ws: websockets %s, listening on port %d of %s",
                 websockets.__version__, port, " ".join(addrs))
        await asyncio.Future()  # forever

    asyncio.run(run())


def main():
    if len(sys.argv) < 5 or sys.argv[1] not in ("http", "ws"):
        sys.exit(__doc__.split("\n\n")[1])
    mode, port, pidfile, addrs = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        os.setsid()  # as echo.py: no signal from the terminal that ran lab.sh
    except OSError:
        pass
    if mode == "http":
        main_http(port, pidfile, addrs)
    else:
        main_ws(port, pidfile, addrs)


if __name__ == "__main__":
    main()
