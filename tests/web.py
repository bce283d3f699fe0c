"""HTTP on both sides of the portal, for tests: what a page would load from outside, a client signed in to a
running portal, and a webhook receiver with the signature check the README gives its owners."""

import hashlib
import hmac
import http.client
import json
import re
import threading
import time
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import requests

URL_ATTRIBUTES = {"src", "href", "action", "srcset", "poster", "data", "formaction"}


class Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.urls = []

    def handle_starttag(self, tag, attrs):
        self.urls += [value for name, value in attrs if name in URL_ATTRIBUTES and value]


def external_urls(html: str) -> list[str]:
    parser = Links()
    parser.feed(html)
    found = [url for url in parser.urls if re.match(r"^(?:[a-z][a-z0-9+.-]*:)?//", url, re.I)]
    # Inline styles and scripts can import too.
    found += re.findall(r"url\(\s*['\"]?((?:https?:)?//[^)'\"]+)", html)
    found += re.findall(r"@import\s+['\"]((?:https?:)?//[^'\"]+)", html)
    return found


# --- A portal running in its own processes ---------------------------------------------------------


def get_or_none(url, **kwargs):
    try:
        return requests.get(url, timeout=3, **kwargs)
    except (requests.ConnectionError, requests.Timeout):  # not up yet, or too busy to answer: callers poll again
        return None


def sign_in(base, username, password, lands_on="/") -> requests.Session:
    session = requests.Session()
    session.get(f"{base}/login/", timeout=5)
    response = session.post(
        f"{base}/login/",
        data={"username": username, "password": password, "csrfmiddlewaretoken": session.cookies["csrftoken"]},
        headers={"Referer": f"{base}/login/"},
        timeout=10,
    )
    assert response.url == f"{base}{lands_on}", f"sign-in failed: {response.status_code} at {response.url}"
    return session


def change_password(session: requests.Session, base, old, new) -> requests.Response:
    """Change the signed-in person's password through the form at /account/password/, as a person does."""
    response = session.post(
        f"{base}/account/password/",
        data={
            "old_password": old,
            "new_password1": new,
            "new_password2": new,
            "csrfmiddlewaretoken": session.cookies["csrftoken"],
        },
        headers={"Referer": f"{base}/account/password/"},
        timeout=10,
    )
    assert response.url == f"{base}/account/password/done/", f"password change failed: {response.status_code}"
    return response


# --- A webhook receiver (the ``receiver`` fixture serves one) --------------------------------------


class Receiver:
    """A webhook receiver on a free local port. ``answers``: what to answer next, in order: an HTTP status,
    or a number of seconds to wait before answering 200 (a receiver too slow for the timeout)."""

    def __init__(self):
        self.requests: list[tuple[dict, bytes]] = []
        self.answers: list = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.requests.append((dict(self.headers), body))
                answer = receiver.answers.pop(0) if receiver.answers else 200
                if isinstance(answer, float):
                    time.sleep(answer)
                    answer = 200
                reply = b"ok" if answer < 300 else b"receiver says no"
                try:
                    self.send_response(answer)
                    self.send_header("Content-Length", str(len(reply)))
                    self.end_headers()
                    self.wfile.write(reply)
                except OSError:
                    pass  # the portal gave up waiting and closed the connection

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"

    def bodies(self) -> list[dict]:
        return [json.loads(body) for _, body in self.requests]


def verify(secret: str, headers: dict, body: bytes) -> bool:
    """What the README tells receivers to do."""
    expected = (
        "sha256="
        + hmac.new(secret.encode(), headers["X-Portal-Timestamp"].encode() + b"." + body, hashlib.sha256).hexdigest()
    )
    return (
        hmac.compare_digest(expected, headers["X-Portal-Signature"])
        and abs(time.time() - int(headers["X-Portal-Timestamp"])) < 300
    )


class Answering:
    """A local HTTP server answering every GET and POST with one fixed answer (``status``, ``headers``, ``body``)
    and recording each request's path: a redirect to somewhere else, or an internal service that must not be
    reached. ``host``: the loopback address it listens on (127.0.0.2 and so on are loopback too on Linux)."""

    def __init__(self, status=200, headers=None, body=b"", host="127.0.0.1"):
        self.paths: list[str] = []
        self.status, self.headers, self.body = status, dict(headers or {}), body
        answering = self

        class Handler(BaseHTTPRequestHandler):
            def answer(self):
                answering.paths.append(self.path)
                self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
                self.send_response(answering.status)
                for name, value in {**answering.headers, "Content-Length": str(len(answering.body))}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(answering.body)

            do_GET = do_POST = answer

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://{host}:{self.server.server_port}"

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


class ForwardProxy:
    """A plain-HTTP forward proxy on a loopback address (``url``), as an internal proxy an admin allows: it relays
    each ``GET http://host/…`` as it is (redirects included, never followed) and records the URLs it relayed."""

    def __init__(self, host="127.0.0.1"):
        self.urls: list[str] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                proxy.urls.append(self.path)
                parts = urlsplit(self.path)
                upstream = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=10)
                headers = {name: value for name, value in self.headers.items() if name.lower() != "proxy-connection"}
                upstream.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""), headers=headers)
                answer = upstream.getresponse()
                body = answer.read()
                self.send_response(answer.status)
                for name, value in answer.getheaders():
                    if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                upstream.close()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://{host}:{self.server.server_port}"

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
