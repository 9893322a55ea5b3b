"""Offsite copies in an S3 bucket (AWS or an S3-compatible store), through boto3:
BACKUP_OFFSITE=s3://BUCKET/PREFIX, S3_ENDPOINT for a store other than AWS, the secrets
S3_ACCESS_KEY_ID / S3_SECRET_ACCESS_KEY (neither: boto3's own credential chain).

A snapshot is `PREFIX/<id>/<file>`. Archives are streamed from the local snapshot in parts (one part
in memory, never a second copy on disk), each object carries its sha256 as metadata, checked after
the upload together with its size, and manifest.json goes last: a copy cut off halfway has no
manifest and never looks complete. Encrypted archives are sent as the ciphertext they are."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
from datetime import UTC
from pathlib import Path
from typing import Any

from ops.backup.catalogue import MANIFEST, snapshot_from_manifest
from ops.backup.model import Snapshot
from ops.backup.offsite.store import CheckedFile, local_files, upload_order
from ops.config import Environment
from ops.console import CHANGED, Reporter
from ops.errors import BackupError
from ops.transport.streams import CHUNK

PART_SIZE = 8 * 1024 * 1024  # S3's parts are at least 5 MiB (but the last); at most 10,000 of them
MAX_PARTS = 10000
SHA256 = "sha256"  # the object metadata key (x-amz-meta-sha256)


def s3_target(text: str) -> tuple[str, str]:
    """(bucket, prefix) of s3://BUCKET/PREFIX (already checked when the env file was read)."""
    bucket, _, prefix = text.removeprefix("s3://").partition("/")
    return bucket, prefix.strip("/")


def part_size(size: int) -> int:
    """PART_SIZE, or larger for an archive that would need more than MAX_PARTS parts."""
    return max(PART_SIZE, -(-size // (MAX_PARTS - 1)))


def s3_error(error: Exception, where: str) -> BackupError:
    """A boto3/botocore error as one line a person can act on (never the credentials)."""
    from botocore.exceptions import ClientError, NoCredentialsError

    if isinstance(error, NoCredentialsError):
        return BackupError(
            "no S3 credentials", where=where, hint="set the secrets S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY"
        )
    if isinstance(error, ClientError):
        code = str(error.response.get("Error", {}).get("Code", ""))
        if code in ("NoSuchBucket", "404"):
            return BackupError("the bucket does not exist", where=where, hint="create it, or correct BACKUP_OFFSITE")
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403", "ExpiredToken"):
            return BackupError(
                f"the store refused the credentials ({code})",
                where=where,
                hint="check S3_ACCESS_KEY_ID / S3_SECRET_ACCESS_KEY and the key's permissions on the bucket",
            )
        return BackupError(f"S3 answered {code}: {error.response.get('Error', {}).get('Message', '')}", where=where)
    return BackupError(
        f"cannot reach the S3 store: {error}", where=where, hint="check S3_ENDPOINT and the network; run it again"
    )


@functools.lru_cache(maxsize=4)
def s3_client(endpoint: str, region: str, key_id: str, secret: str) -> Any:
    """A boto3 S3 client (made once per process and settings: making one reads boto3's models)."""
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=10,
        read_timeout=120,
        retries={"max_attempts": 3, "mode": "standard"},
        # S3-compatible stores rarely have a DNS name per bucket: path-style requests there.
        s3={"addressing_style": "path"} if endpoint else {},
    )
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint or None,
        region_name=region or None,
        aws_access_key_id=key_id or None,
        aws_secret_access_key=secret or None,
        config=config,
    )


class S3Offsite:
    """A prefix in an S3 bucket."""

    def __init__(self, env: Environment, client: Any = None):
        self.bucket, self.prefix = s3_target(env.backup.offsite)
        self.where = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        self.client = client or self._client(env)

    @staticmethod
    def _client(env: Environment) -> Any:
        settings = env.backup
        return s3_client(
            settings.s3_endpoint,
            settings.s3_region,
            env.secret("S3_ACCESS_KEY_ID"),
            env.secret("S3_SECRET_ACCESS_KEY"),
        )

    def key(self, snapshot_id: str, name: str = "") -> str:
        return "/".join(part for part in (self.prefix, snapshot_id, name) if part)

    def _call(self, method: str, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client, method)(**kwargs)
        except (BotoCoreError, ClientError) as error:
            raise s3_error(error, self.where) from None

    def _objects(self, prefix: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        token: dict[str, str] = {}
        while True:
            page = self._call("list_objects_v2", Bucket=self.bucket, Prefix=prefix, **token)
            found.extend(page.get("Contents", []))
            if not page.get("IsTruncated"):
                return found
            token = {"ContinuationToken": page["NextContinuationToken"]}

    def _uploads(self, prefix: str) -> list[dict[str, Any]]:
        """Multipart uploads begun under prefix and neither completed nor aborted: a copy cut off
        before its abort reached the store. Object listings never show them, yet their parts are
        stored (and billed) until they are aborted."""
        from botocore.exceptions import BotoCoreError, ClientError

        found: list[dict[str, Any]] = []
        markers: dict[str, str] = {}
        while True:
            try:
                page = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=prefix, **markers)
            except ClientError as error:
                # A key without s3:ListBucketMultipartUploads (or a store without the call) still
                # copies, lists and prunes; its cut-off uploads are left to a lifecycle rule (README).
                if str(error.response.get("Error", {}).get("Code")) in ("AccessDenied", "403", "NotImplemented"):
                    return found
                raise s3_error(error, self.where) from None
            except BotoCoreError as error:
                raise s3_error(error, self.where) from None
            found.extend(page.get("Uploads", []))
            if not page.get("IsTruncated"):
                return found
            markers = {"KeyMarker": page["NextKeyMarker"], "UploadIdMarker": page["NextUploadIdMarker"]}

    def _abort_uploads(self, snapshot_id: str) -> int:
        uploads = self._uploads(self.key(snapshot_id) + "/")
        for upload in uploads:
            self._call("abort_multipart_upload", Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"])
        return len(uploads)

    def snapshots(self) -> list[Snapshot]:
        base = f"{self.prefix}/" if self.prefix else ""
        objects: dict[str, dict[str, dict[str, Any]]] = {}
        for item in self._objects(base):
            snapshot_id, _, name = str(item["Key"])[len(base) :].partition("/")
            if name:
                objects.setdefault(snapshot_id, {})[name] = item
        # A copy cut off in its first large archive has no object yet, only an upload: still listed
        # (incomplete), so prune finds and aborts it.
        started: dict[str, list[Any]] = {}
        for upload in self._uploads(base):
            snapshot_id, _, name = str(upload["Key"])[len(base) :].partition("/")
            if name:
                started.setdefault(snapshot_id, []).append(upload["Initiated"])
        found = []
        for snapshot_id in sorted(objects.keys() | started.keys()):
            files = objects.get(snapshot_id, {})
            data = None
            if MANIFEST in files:
                body = self._call("get_object", Bucket=self.bucket, Key=self.key(snapshot_id, MANIFEST))["Body"]
                with contextlib.closing(body), contextlib.suppress(ValueError):
                    data = json.loads(body.read())
            snapshot = snapshot_from_manifest(data, snapshot_id, Path(self.where) / snapshot_id)
            # Complete only when every archive the manifest lists is there, whole.
            whole = all(
                record.archive in files and int(files[record.archive]["Size"]) == record.bytes
                for record in snapshot.archives
            )
            if not whole or not snapshot.complete:
                newest = max([item["LastModified"] for item in files.values()] + started.get(snapshot_id, []))
                snapshot.complete = False
                snapshot.created = snapshot.created or newest.astimezone(UTC).isoformat(timespec="seconds")
            found.append(snapshot)
        return found

    def send(self, snapshot: Snapshot, reporter: Reporter) -> int:
        records = {record.archive: record for record in snapshot.archives}
        sent = 0
        # An earlier copy of this snapshot cut off mid-upload: its parts are replaced by this one.
        if aborted := self._abort_uploads(snapshot.id):
            reporter.step(self.where, "abort", CHANGED, f"{aborted} upload(s) an earlier copy left unfinished")
        try:
            for name in upload_order(snapshot):
                path = snapshot.path / name
                record = records.get(name)
                progress = reporter.transfer("s3", f"offsite {name}", path.stat().st_size)
                sent += self._upload(path, self.key(snapshot.id, name), record.sha256 if record else None, progress)
        except BaseException:
            with contextlib.suppress(Exception):  # the store may be what failed; prune removes it later
                self.remove(snapshot)
            raise
        return sent

    def _upload(self, path: Path, key: str, sha256: str | None, progress: Any) -> int:
        """Stream path to key in parts; then check the object's size and sha256 metadata."""
        size = path.stat().st_size
        digest = hashlib.sha256()
        metadata = {SHA256: sha256} if sha256 else {}
        with path.open("rb") as handle:
            chunk = part_size(size)
            if size <= chunk:
                data = handle.read()
                digest.update(data)
                self._call("put_object", Bucket=self.bucket, Key=key, Body=data, Metadata=metadata)
                progress(len(data))
            else:
                upload = self._call("create_multipart_upload", Bucket=self.bucket, Key=key, Metadata=metadata)
                upload_id = upload["UploadId"]
                try:
                    parts: list[dict[str, Any]] = []
                    while data := handle.read(chunk):
                        digest.update(data)
                        number = len(parts) + 1
                        answer = self._call(
                            "upload_part", Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data
                        )
                        parts.append({"ETag": answer["ETag"], "PartNumber": number})
                        progress(len(data))
                    self._call(
                        "complete_multipart_upload",
                        Bucket=self.bucket,
                        Key=key,
                        UploadId=upload_id,
                        MultipartUpload={"Parts": parts},
                    )
                except BaseException:
                    with contextlib.suppress(Exception):
                        self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
                    raise
        head = self._call("head_object", Bucket=self.bucket, Key=key)
        stored = (int(head["ContentLength"]), head.get("Metadata", {}).get(SHA256))
        if stored[0] != size or (sha256 and (stored[1] != sha256 or digest.hexdigest() != sha256)):
            raise BackupError(
                f"offsite copy of {path.name} does not match its sha256 or size after the upload",
                where=f"s3://{self.bucket}/{key}",
                hint="the local archive changed or the store damaged it: run backup.verify, then offsite again",
            )
        return size

    def fetch(self, snapshot: Snapshot, into: Path, reporter: Reporter) -> None:
        for name, record in local_files(snapshot):
            key = self.key(snapshot.id, name)
            answer = self._call("get_object", Bucket=self.bucket, Key=key)
            if record and answer.get("Metadata", {}).get(SHA256) not in (None, record.sha256):
                raise BackupError(f"{name}: its sha256 metadata is not the manifest's", where=self.where)
            sink = CheckedFile(into / name, reporter.transfer("s3", f"fetch {name}", record.bytes if record else None))
            try:
                from botocore.exceptions import BotoCoreError

                with contextlib.closing(answer["Body"]) as body:
                    for data in body.iter_chunks(CHUNK):
                        sink.write(data)
            except BotoCoreError as error:
                sink.abort()
                raise s3_error(error, self.where) from None
            except BaseException:
                sink.abort()
                raise
            sink.close(record, self.where)

    def remove(self, snapshot: Snapshot) -> None:
        self._call("delete_object", Bucket=self.bucket, Key=self.key(snapshot.id, MANIFEST))
        keys = [item["Key"] for item in self._objects(self.key(snapshot.id) + "/")]
        for start in range(0, len(keys), 1000):
            batch = [{"Key": key} for key in keys[start : start + 1000]]
            self._call("delete_objects", Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
        self._abort_uploads(snapshot.id)

    def close(self) -> None:
        """Nothing to close: the client is kept for the process (s3_client)."""
