"""S3 errors: every refusal the API gives is an ``S3Error`` with an S3 code, an HTTP status and
a message naming the problem; ``to_xml`` renders the standard ``<Error>`` document."""

from __future__ import annotations

from xml.sax.saxutils import escape

STATUS = {
    "AccessDenied": 403,
    "AccessForbidden": 403,
    "BadDigest": 400,
    "BucketAlreadyExists": 409,
    "BucketAlreadyOwnedByYou": 409,
    "BucketNotEmpty": 409,
    "EntityTooLarge": 400,
    "EntityTooSmall": 400,
    "ExpiredToken": 400,
    "IncompleteBody": 400,
    "InternalError": 500,
    "InvalidAccessKeyId": 403,
    "InvalidArgument": 400,
    "InvalidBucketName": 400,
    "InvalidDigest": 400,
    "InvalidPart": 400,
    "InvalidPartNumber": 416,
    "InvalidPartOrder": 400,
    "InvalidRange": 416,
    "InvalidRequest": 400,
    "KeyTooLongError": 400,
    "MalformedXML": 400,
    "MethodNotAllowed": 405,
    "MissingContentLength": 411,
    "NoSuchBucket": 404,
    "NoSuchCORSConfiguration": 404,
    "NoSuchKey": 404,
    "NoSuchLifecycleConfiguration": 404,
    "NoSuchUpload": 404,
    "NotImplemented": 501,
    "NotModified": 304,
    "PreconditionFailed": 412,
    "RequestTimeTooSkewed": 403,
    "RequestTimeout": 400,
    "ServiceUnavailable": 503,
    "SignatureDoesNotMatch": 403,
    "XAmzContentSHA256Mismatch": 400,
}


class S3Error(Exception):
    def __init__(self, code: str, message: str, *, resource: str = "") -> None:
        super().__init__(f"{code}: {message}")
        if code not in STATUS:
            raise ValueError(f"unknown S3 error code {code!r}")
        self.code = code
        self.message = message
        self.resource = resource

    @property
    def status(self) -> int:
        return STATUS[self.code]

    def to_xml(self, request_id: str) -> bytes:
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n<Error>'
            f"<Code>{self.code}</Code><Message>{escape(self.message)}</Message>"
            f"<Resource>{escape(self.resource)}</Resource><RequestId>{request_id}</RequestId>"
            "</Error>"
        ).encode()


def not_implemented(what: str) -> S3Error:
    return S3Error("NotImplemented", f"{what} is not supported by Cloudless's object store")
