"""Bucket CORS on one loopback node: boto3 sets, reads and removes the rules; preflights and
requests with an ``Origin`` get the headers of the matching rule (raw HTTP, errors too); and
Debian's Chromium, on a page served from another origin, uploads through a presigned URL
and reads the object back with ``fetch`` where the rules allow it, and is stopped by its own
CORS checks where they do not."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.integration.objectstore.conftest import S3Env

APP = "http://127.0.0.1:{port}"
RULES = {
    "CORSRules": [
        {"AllowedOrigins": ["https://app.example"], "AllowedMethods": ["GET", "PUT"],
         "AllowedHeaders": ["content-type"], "ExposeHeaders": ["ETag"], "MaxAgeSeconds": 600},
    ]
}  # fmt: skip


def raw(method: str, url: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    """One request (no signature), its status, headers and body, whatever the status."""
    req = urllib.request.Request(url, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers.items()), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers.items()), e.read()


def test_put_get_delete_the_rules(s3env: S3Env, s3: Any) -> None:
    s3.create_bucket(Bucket="cors-api")
    with pytest.raises(ClientError) as e:
        s3.get_bucket_cors(Bucket="cors-api")
    assert e.value.response["Error"]["Code"] == "NoSuchCORSConfiguration"
    s3.put_bucket_cors(Bucket="cors-api", CORSConfiguration=RULES)
    got = s3.get_bucket_cors(Bucket="cors-api")["CORSRules"]
    assert got == RULES["CORSRules"]
    bad = {"CORSRules": [{"AllowedOrigins": ["*"], "AllowedMethods": ["PATCH"]}]}
    with pytest.raises(ClientError) as e:
        s3.put_bucket_cors(Bucket="cors-api", CORSConfiguration=bad)
    assert e.value.response["Error"]["Code"] == "InvalidRequest"
    assert s3.get_bucket_cors(Bucket="cors-api")["CORSRules"] == got  # untouched
    bob = s3env.client(s3env.other)
    with pytest.raises(ClientError) as e:
        bob.put_bucket_cors(Bucket="cors-api", CORSConfiguration=RULES)
    assert e.value.response["Error"]["Code"] == "AccessDenied"
    s3.delete_bucket_cors(Bucket="cors-api")
    with pytest.raises(ClientError) as e:
        s3.get_bucket_cors(Bucket="cors-api")
    assert e.value.response["Error"]["Code"] == "NoSuchCORSConfiguration"


PREFLIGHTS = [
    # (path, request headers, status, answer header checks or the S3 code)
    ("/cors-raw/k", {"Origin": "https://app.example", "Access-Control-Request-Method": "PUT",
                     "Access-Control-Request-Headers": "Content-Type"}, 200,
     {"Access-Control-Allow-Origin": "https://app.example",
      "Access-Control-Allow-Headers": "Content-Type", "Access-Control-Max-Age": "600"}),
    ("/cors-raw/k", {"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
     403, "AccessForbidden"),
    ("/cors-raw/k", {"Origin": "https://app.example", "Access-Control-Request-Method": "DELETE"},
     403, "AccessForbidden"),
    ("/cors-raw/k", {"Origin": "https://app.example", "Access-Control-Request-Method": "PUT",
                     "Access-Control-Request-Headers": "x-secret"}, 403, "AccessForbidden"),
    ("/cors-raw/k", {"Access-Control-Request-Method": "GET"}, 400, "InvalidRequest"),
    ("/no-such-bucket/k", {"Origin": "https://app.example",
                           "Access-Control-Request-Method": "GET"}, 403, "AccessForbidden"),
    ("/BAD_name/k", {"Origin": "https://app.example", "Access-Control-Request-Method": "GET"},
     400, "InvalidBucketName"),
]  # fmt: skip


@pytest.mark.parametrize(("path", "headers", "status", "want"), PREFLIGHTS)
def test_preflights(
    s3env: S3Env, s3: Any, path: str, headers: dict[str, str], status: int, want: Any
) -> None:
    if "cors-raw" not in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
        s3.create_bucket(Bucket="cors-raw")
        s3.put_bucket_cors(Bucket="cors-raw", CORSConfiguration=RULES)
    code, got, body = raw("OPTIONS", s3env.node.endpoint + path, headers)
    assert code == status, body
    if isinstance(want, dict):
        assert {k: got.get(k) for k in want} == want
    else:
        assert f"<Code>{want}</Code>".encode() in body
        assert "Access-Control-Allow-Origin" not in got


def test_answers_carry_the_matching_rules_headers(s3env: S3Env, s3: Any) -> None:
    s3.create_bucket(Bucket="cors-answers")
    s3.put_bucket_cors(Bucket="cors-answers", CORSConfiguration=RULES)
    s3.put_object(Bucket="cors-answers", Key="k", Body=b"hello")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "cors-answers", "Key": "k"})
    code, got, body = raw("GET", url, {"Origin": "https://app.example"})
    assert code == 200 and body == b"hello"
    assert got["Access-Control-Allow-Origin"] == "https://app.example"
    assert got["Access-Control-Expose-Headers"] == "ETag"
    code, got, _ = raw("GET", url, {"Origin": "https://evil.example"})
    assert code == 200 and "Access-Control-Allow-Origin" not in got  # served; the browser hides it
    missing = s3.generate_presigned_url(
        "get_object", Params={"Bucket": "cors-answers", "Key": "nope"}
    )
    code, got, _ = raw("GET", missing, {"Origin": "https://app.example"})
    assert code == 404 and got["Access-Control-Allow-Origin"] == "https://app.example"


# ---- a real browser ------------------------------------------------------------------------

PAGE = """<!doctype html><title>waiting</title><script>
(async () => {
  try {
    const put = await fetch(%(put)r, {method: "PUT", body: "from the browser",
                                       headers: {"Content-Type": "text/plain"}});
    if (!put.ok) { document.title = "put " + put.status; return; }
    const get = await fetch(%(get)r);
    document.title = "ok " + (await get.text()) + " etag " + (get.headers.get("ETag") ? 1 : 0);
  } catch (e) {
    document.title = "blocked " + e.name;
  }
})();
</script>"""


@pytest.fixture
def app_origin() -> Iterator[tuple[str, dict[str, bytes]]]:
    """A web server on another origin (another port) serving the pages in the dict."""
    pages: dict[str, bytes] = {}

    class Pages(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = pages.get(self.path, b"")
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Pages)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield APP.format(port=server.server_address[1]), pages
    finally:
        server.shutdown()
        server.server_close()


def test_a_browser_on_another_origin(
    s3env: S3Env, s3: Any, browser: Any, app_origin: tuple[str, dict[str, bytes]]
) -> None:
    origin, pages = app_origin
    rules = {"CORSRules": [{**RULES["CORSRules"][0], "AllowedOrigins": [origin]}]}
    for bucket in ("cors-web", "cors-closed"):
        s3.create_bucket(Bucket=bucket)
    s3.put_bucket_cors(Bucket="cors-web", CORSConfiguration=rules)
    for bucket in ("cors-web", "cors-closed"):
        params = {"Bucket": bucket, "Key": "page-upload.txt"}
        pages[f"/{bucket}.html"] = (
            PAGE
            % {
                "put": s3.generate_presigned_url("put_object", Params=params),
                "get": s3.generate_presigned_url("get_object", Params=params),
            }
        ).encode()
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{origin}/cors-web.html")
    WebDriverWait(browser, 20).until(lambda d: d.title != "waiting")
    assert browser.title == "ok from the browser etag 1"
    got = s3.get_object(Bucket="cors-web", Key="page-upload.txt")["Body"].read()
    assert got == b"from the browser"
    browser.get(f"{origin}/cors-closed.html")
    WebDriverWait(browser, 20).until(lambda d: d.title != "waiting")
    assert browser.title == "blocked TypeError"  # the preflight was refused: nothing sent
    with pytest.raises(ClientError):
        s3.head_object(Bucket="cors-closed", Key="page-upload.txt")
