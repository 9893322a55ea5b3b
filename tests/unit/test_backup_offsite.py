"""S3 offsite copies against a real S3-compatible server (moto's, on 127.0.0.1) with real boto3:
streamed multipart uploads checked by sha256 metadata, the manifest last, listing, retention there,
fetch back checked, an upload cut off halfway, and the errors a person sees."""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ops.backup import (
    RetentionPolicy,
    copy_offsite,
    fetch_snapshot,
    list_snapshots,
    offsite_snapshots,
    prune,
    read_snapshot,
)
from ops.backup.catalogue import PARTIAL, write_manifest
from ops.backup.model import ArchiveRecord, Snapshot
from ops.backup.offsite.s3 import PART_SIZE, part_size
from ops.config import Environment, load_environment
from ops.console import RecordingReporter
from ops.errors import BackupError, ConfigError
from tests.s3server import ACCESS_ID, SIGNING_WORD, CuttingRelay, S3Server

MiB = 1024 * 1024


def environment(root: Path, bucket: str, endpoint: str, backups: str = "backups", extra: str = "") -> Environment:
    (root / "env").mkdir(parents=True, exist_ok=True)
    (root / "env" / "t.env").write_text(
        f"HOSTS=web1.example.com\nPROJECT=demo\nBACKUP_DIR={backups}\nBACKUP_OFFSITE=s3://{bucket}/team/demo\n"
        f"S3_ENDPOINT={endpoint}\nS3_REGION=us-east-1\n{extra}"
    )
    return load_environment("t", root, {"S3_ACCESS_KEY_ID": ACCESS_ID, "S3_SECRET_ACCESS_KEY": SIGNING_WORD})


def make_snapshot(env: Environment, created: datetime, archives: dict[str, bytes]) -> Snapshot:
    """A complete local snapshot as backup.all leaves it: archives, manifest, BACKUP_INFO.md."""
    snapshot_id = created.strftime("%Y%m%dT%H%M%SZ")
    base = env.root / "backups"
    partial = base / f"{snapshot_id}{PARTIAL}"
    records = []
    for volume, data in archives.items():
        name = f"web1/{volume}.tar.zst" + (".age" if data.startswith(b"age-encryption.org") else "")
        (partial / name).parent.mkdir(parents=True, exist_ok=True)
        (partial / name).write_bytes(data)
        digest = hashlib.sha256(data).hexdigest()
        records.append(
            ArchiveRecord("web1", volume, f"demo_{volume}", (volume,), "files", name, "zstd", len(data), digest, 0.1)
        )
    snapshot = Snapshot(
        snapshot_id,
        partial,
        False,
        created.isoformat(timespec="seconds"),
        archives=records,
        hosts={"web1": {"release": "r1"}},
    )
    write_manifest(snapshot, partial, env)
    os.rename(partial, base / snapshot_id)
    return read_snapshot(base / snapshot_id)


def objects(s3: S3Server, bucket: str) -> dict[str, bytes]:
    client = s3.client()
    keys = [item["Key"] for item in client.list_objects_v2(Bucket=bucket).get("Contents", [])]  # type: ignore[attr-defined]
    return {key: client.get_object(Bucket=bucket, Key=key)["Body"].read() for key in keys}  # type: ignore[attr-defined]


def uploads(s3: S3Server, bucket: str) -> list[str]:
    """The keys of the multipart uploads begun in the bucket and neither completed nor aborted."""
    answer = s3.client().list_multipart_uploads(Bucket=bucket)  # type: ignore[attr-defined]
    return [item["Key"] for item in answer.get("Uploads", [])]


def test_a_snapshot_goes_to_s3_checked_and_comes_back_byte_identical(s3: S3Server, tmp_path: Path) -> None:
    bucket = s3.make_bucket("offsite-roundtrip")
    env = environment(tmp_path, bucket, s3.endpoint)
    big = os.urandom(PART_SIZE + 3 * MiB)  # two parts
    snapshot = make_snapshot(env, datetime(2026, 12, 1, 3, 17, tzinfo=UTC), {"redis-data": big, "web-data": b"small"})

    result = copy_offsite(env, RecordingReporter())
    assert result.copied and result.target == f"s3://{bucket}/team/demo" and result.bytes > len(big)
    stored = objects(s3, bucket)
    prefix = f"team/demo/{snapshot.id}/"
    assert stored[prefix + "web1/redis-data.tar.zst"] == big
    assert json.loads(stored[prefix + "manifest.json"])["complete"] is True
    head = s3.client().head_object(Bucket=bucket, Key=prefix + "web1/redis-data.tar.zst")  # type: ignore[attr-defined]
    assert head["Metadata"]["sha256"] == hashlib.sha256(big).hexdigest()
    assert copy_offsite(env, RecordingReporter()).copied is False  # there already

    where, listed = offsite_snapshots(env)
    assert where == f"s3://{bucket}/team/demo"
    assert [(item.id, item.complete, item.bytes) for item in listed] == [(snapshot.id, True, len(big) + 5)]

    # A new machine with only the bucket: an empty BACKUP_DIR gets the snapshot back, checked.
    fresh = environment(tmp_path / "new", bucket, s3.endpoint)
    fetched = fetch_snapshot(fresh, RecordingReporter(), "latest")
    assert fetched.complete and fetched.id == snapshot.id and fetched.path == tmp_path / "new" / "backups" / snapshot.id
    assert (fetched.path / "web1" / "redis-data.tar.zst").read_bytes() == big
    assert [s.id for s in list_snapshots(tmp_path / "new" / "backups")] == [snapshot.id]
    again = RecordingReporter()
    fetch_snapshot(fresh, again, snapshot.id[:8])
    assert "is here already" in again.events[-1].detail


def test_a_damaged_offsite_archive_is_refused_by_fetch_and_leaves_nothing(s3: S3Server, tmp_path: Path) -> None:
    bucket = s3.make_bucket("offsite-damaged")
    env = environment(tmp_path, bucket, s3.endpoint)
    snapshot = make_snapshot(env, datetime(2026, 12, 1, tzinfo=UTC), {"redis-data": b"A" * 1000})
    copy_offsite(env, RecordingReporter())
    key = f"team/demo/{snapshot.id}/web1/redis-data.tar.zst"
    s3.client().put_object(Bucket=bucket, Key=key, Body=b"B" * 1000)  # type: ignore[attr-defined]
    fresh = environment(tmp_path / "new", bucket, s3.endpoint)
    with pytest.raises(BackupError, match=r"redis-data.tar.zst does not match its sha256"):
        fetch_snapshot(fresh, RecordingReporter(), None)
    assert list((tmp_path / "new" / "backups").iterdir()) == []


def test_encrypted_archives_stay_ciphertext_offsite(s3: S3Server, tmp_path: Path) -> None:
    bucket = s3.make_bucket("offsite-age")
    env = environment(tmp_path, bucket, s3.endpoint)
    ciphertext = b"age-encryption.org/v1\n-> X25519 " + os.urandom(2000)
    snapshot = make_snapshot(env, datetime(2026, 12, 1, tzinfo=UTC), {"db-data": ciphertext})
    copy_offsite(env, RecordingReporter())
    assert objects(s3, bucket)[f"team/demo/{snapshot.id}/web1/db-data.tar.zst.age"] == ciphertext


def test_an_upload_cut_halfway_never_looks_complete(s3: S3Server, tmp_path: Path) -> None:
    bucket = s3.make_bucket("offsite-cut")
    port = int(s3.endpoint.rsplit(":", 1)[1])
    relay = CuttingRelay(port, cut_after=PART_SIZE + MiB)  # in the middle of the second part
    cut = environment(tmp_path, bucket, relay.endpoint)
    snapshot = make_snapshot(cut, datetime(2026, 12, 2, tzinfo=UTC), {"redis-data": os.urandom(PART_SIZE + 2 * MiB)})
    try:
        with pytest.raises(BackupError, match="cannot reach the S3 store"):
            copy_offsite(cut, RecordingReporter())
    finally:
        relay.close()
    direct = environment(tmp_path, bucket, s3.endpoint)
    _, listed = offsite_snapshots(direct)
    assert [(item.id, item.complete) for item in listed] == [(snapshot.id, False)]
    assert not any(key.endswith("manifest.json") for key in objects(s3, bucket))
    # The abort could not reach the store either: the upload's first part is still stored there.
    assert len(uploads(s3, bucket)) == 1
    # Copied again once the network is back, it is complete, and the earlier upload is aborted.
    again = RecordingReporter()
    assert copy_offsite(direct, again).copied
    assert [(item.id, item.complete) for item in offsite_snapshots(direct)[1]] == [(snapshot.id, True)]
    assert uploads(s3, bucket) == []
    assert any(event.detail == "1 upload(s) an earlier copy left unfinished" for event in again.events)


def test_two_copies_of_a_snapshot_at_once_from_this_machine_copy_it_once(s3: S3Server, tmp_path: Path) -> None:
    """The schedule's copy and a person's: the second waits, then finds it there (it would otherwise
    abort the first one's uploads and remove what it wrote)."""
    from concurrent.futures import ThreadPoolExecutor

    bucket = s3.make_bucket("offsite-twice")
    env = environment(tmp_path, bucket, s3.endpoint)
    snapshot = make_snapshot(env, datetime(2026, 12, 2, tzinfo=UTC), {"redis-data": os.urandom(PART_SIZE + MiB)})
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: copy_offsite(env, RecordingReporter()), range(2)))
    assert sorted(result.copied for result in results) == [False, True]
    assert [(item.id, item.complete) for item in offsite_snapshots(env)[1]] == [(snapshot.id, True)]
    assert uploads(s3, bucket) == []


def test_a_copy_cut_in_its_first_upload_is_listed_and_pruned_with_its_parts(s3: S3Server, tmp_path: Path) -> None:
    """No object yet, only a multipart upload: it is stored and billed, so it must not be invisible."""
    bucket = s3.make_bucket("offsite-upload-only")
    env = environment(tmp_path, bucket, s3.endpoint)
    client = s3.client()
    key = "team/demo/20261001T000000Z/web1/x.tar.zst"
    upload = client.create_multipart_upload(Bucket=bucket, Key=key)  # type: ignore[attr-defined]
    client.upload_part(Bucket=bucket, Key=key, UploadId=upload["UploadId"], PartNumber=1, Body=b"x" * MiB)  # type: ignore[attr-defined]
    assert [(item.id, item.complete) for item in offsite_snapshots(env)[1]] == [("20261001T000000Z", False)]
    result = prune(env, RecordingReporter(), RetentionPolicy(last=1), stale_after=timedelta(0))
    assert result.offsite_incomplete_removed == ["20261001T000000Z"]
    assert uploads(s3, bucket) == [] and offsite_snapshots(env)[1] == []


def test_a_key_that_may_not_list_uploads_still_lists_copies(s3: S3Server, tmp_path: Path) -> None:
    """A key without s3:ListBucketMultipartUploads: the copies are listed as before."""
    from botocore.exceptions import ClientError

    from ops.backup.offsite.s3 import S3Offsite

    bucket = s3.make_bucket("offsite-no-upload-listing")
    env = environment(tmp_path, bucket, s3.endpoint)
    snapshot = make_snapshot(env, datetime(2026, 12, 1, tzinfo=UTC), {"redis-data": b"r"})
    copy_offsite(env, RecordingReporter())

    class NoUploadListing:
        def __init__(self, client: object):
            self.client = client

        def __getattr__(self, name: str) -> object:
            return getattr(self.client, name)

        def list_multipart_uploads(self, **_: object) -> None:
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": "Access Denied"}}, "ListMultipartUploads")

    store = S3Offsite(env, client=NoUploadListing(s3.client()))
    assert [(item.id, item.complete) for item in store.snapshots()] == [(snapshot.id, True)]


def test_a_manifest_whose_archive_is_missing_is_not_complete(s3: S3Server, tmp_path: Path) -> None:
    bucket = s3.make_bucket("offsite-missing")
    env = environment(tmp_path, bucket, s3.endpoint)
    snapshot = make_snapshot(env, datetime(2026, 12, 1, tzinfo=UTC), {"redis-data": b"r" * 10, "web-data": b"w"})
    copy_offsite(env, RecordingReporter())
    s3.client().delete_object(Bucket=bucket, Key=f"team/demo/{snapshot.id}/web1/web-data.tar.zst")  # type: ignore[attr-defined]
    assert [(item.id, item.complete) for item in offsite_snapshots(env)[1]] == [(snapshot.id, False)]


def test_prune_applies_the_policy_offsite_and_keeps_the_last_copy_of_a_volume(s3: S3Server, tmp_path: Path) -> None:
    bucket = s3.make_bucket("offsite-prune")
    env = environment(tmp_path, bucket, s3.endpoint)
    days = [datetime(2026, 11, day, 3, 17, tzinfo=UTC) for day in (1, 2, 3)]
    only_once = make_snapshot(env, days[0], {"redis-data": b"1", "old-data": b"only here"})
    middle = make_snapshot(env, days[1], {"redis-data": b"2"})
    newest = make_snapshot(env, days[2], {"redis-data": b"3"})
    for snapshot in (only_once, middle, newest):
        copy_offsite(env, RecordingReporter(), snapshot.id)
    # An interrupted copy: objects but no manifest.
    s3.client().put_object(Bucket=bucket, Key="team/demo/20261001T000000Z/web1/x.tar.zst", Body=b"x")  # type: ignore[attr-defined]
    s3.client().create_multipart_upload(Bucket=bucket, Key="team/demo/20261001T000000Z/web1/y.tar.zst")  # type: ignore[attr-defined]
    policy = RetentionPolicy(last=1)
    dry = prune(env, RecordingReporter(), policy, dry_run=True)
    assert dry.offsite_removed == [middle.id] and len(offsite_snapshots(env)[1]) == 4
    result = prune(env, RecordingReporter(), policy)
    assert result.removed == [middle.id]  # here
    assert result.offsite_removed == [middle.id]
    assert result.offsite_incomplete_removed == []  # a moment ago: it may still be copying
    stale = prune(env, RecordingReporter(), policy, stale_after=timedelta(0))
    assert stale.offsite_incomplete_removed == ["20261001T000000Z"] and stale.offsite_removed == []
    assert "last copy of old-data on web1" in result.offsite_kept[only_once.id]
    assert [item.id for item in offsite_snapshots(env)[1]] == [only_once.id, newest.id]
    assert not [key for key in objects(s3, bucket) if middle.id in key]
    assert uploads(s3, bucket) == []


def test_s3_errors_are_one_line_naming_the_bucket(s3: S3Server, tmp_path: Path) -> None:
    env = environment(tmp_path, "no-such-bucket", s3.endpoint)
    make_snapshot(env, datetime(2026, 12, 1, tzinfo=UTC), {"redis-data": b"r"})
    with pytest.raises(BackupError) as raised:
        copy_offsite(env, RecordingReporter())
    assert raised.value.one_line() == (
        "s3://no-such-bucket/team/demo: the bucket does not exist (create it, or correct BACKUP_OFFSITE)"
    )
    (tmp_path / "down").mkdir()
    down = environment(tmp_path / "down", "some-bucket", "http://127.0.0.1:9")
    with pytest.raises(BackupError, match=r"^s3://some-bucket/team/demo: cannot reach the S3 store"):
        offsite_snapshots(down)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("BACKUP_OFFSITE=s3://Bad_Bucket/x\n", "BACKUP_OFFSITE: 'Bad_Bucket' is not an S3 bucket name"),
        ("BACKUP_OFFSITE=s3://good-bucket/a//b\n", "BACKUP_OFFSITE: 'a//b' is not a key prefix"),
        ("BACKUP_OFFSITE=ftp://host/x\n", "BACKUP_OFFSITE: 'ftp://host/x': s3://BUCKET/PREFIX or"),
        ("S3_ENDPOINT=minio:9000\n", "S3_ENDPOINT: 'minio:9000' is not an http(s):// URL"),
    ],
)
def test_bad_offsite_settings_name_the_line(tmp_path: Path, line: str, expected: str) -> None:
    (tmp_path / "env").mkdir()
    (tmp_path / "env" / "t.env").write_text("HOSTS=a.example\n" + line)
    with pytest.raises(ConfigError, match="^env/t.env:2: " + expected.replace("(", r"\(").replace(")", r"\)")):
        load_environment("t", tmp_path, {})


def test_s3_credentials_come_as_a_pair(tmp_path: Path) -> None:
    (tmp_path / "env").mkdir()
    (tmp_path / "env" / "t.env").write_text("HOSTS=a.example\nBACKUP_OFFSITE=s3://bucket-a/p\n")
    with pytest.raises(ConfigError, match="secret S3_ACCESS_KEY_ID is set but S3_SECRET_ACCESS_KEY is not"):
        load_environment("t", tmp_path, {"S3_ACCESS_KEY_ID": ACCESS_ID})
    env = load_environment("t", tmp_path, {"S3_ACCESS_KEY_ID": ACCESS_ID, "S3_SECRET_ACCESS_KEY": SIGNING_WORD})
    assert env.redact(f"key {SIGNING_WORD}") == "key ***"


def test_part_size_grows_only_for_archives_over_ten_thousand_parts() -> None:
    assert part_size(1) == PART_SIZE and part_size(50 * 1024 * MiB) == PART_SIZE
    assert part_size(200 * 1024 * MiB) * 9999 >= 200 * 1024 * MiB


def test_ssh_offsite_lists_fetches_checked_and_removes_the_manifest_first(tmp_path: Path) -> None:
    from ops.backup.offsite import SSHOffsite
    from ops.config import HostSpec
    from ops.transport import Host
    from tests.fakes import FakeRunner

    (tmp_path / "env").mkdir()
    (tmp_path / "env" / "t.env").write_text("HOSTS=web1.example.com\nBACKUP_OFFSITE=vault@far.example:/srv/b\n")
    env = load_environment("t", tmp_path, {})
    record = ArchiveRecord("web1", "redis-data", "demo_redis-data", ("redis",), "redis", "web1/redis-data.tar.zst",
                           "zstd", 4, hashlib.sha256(b"data").hexdigest(), 0.1)  # fmt: skip
    manifest = json.dumps({"complete": True, "created": "2026-12-01T03:17:00+00:00", "archives": [record.as_dict()]})
    listing = (
        f"=== opskit-offsite 20261201T031700Z 1764559020\n{manifest}\n\n"
        "=== opskit-offsite 20261202T031700Z.partial 1764645420\n\n"
    )
    runner = FakeRunner(
        answers={"for d in */": (0, listing)},
        outputs={"redis-data.tar.zst": b"data", "BACKUP_INFO.md": b"# info", "manifest.json": manifest.encode()},
    )
    store = SSHOffsite(env, Host(HostSpec("far.example", 22, "vault"), runner))
    assert store.where == "vault@far.example:22:/srv/b"
    listed = store.snapshots()
    assert [(item.id, item.complete) for item in listed] == [("20261201T031700Z", True), ("20261202T031700Z", False)]
    assert listed[1].created == "2025-12-02T03:17:00+00:00"  # the directory's time
    store.fetch(listed[0], tmp_path / "in", RecordingReporter())
    assert (tmp_path / "in" / "web1" / "redis-data.tar.zst").read_bytes() == b"data"
    assert json.loads((tmp_path / "in" / "manifest.json").read_text())["complete"] is True
    runner.outputs["redis-data.tar.zst"] = b"DATA"  # damaged there
    with pytest.raises(BackupError, match=r"redis-data\.tar\.zst does not match its sha256"):
        store.fetch(listed[0], tmp_path / "again", RecordingReporter())
    assert not (tmp_path / "again" / "web1" / "redis-data.tar.zst").exists()
    store.remove(listed[1])
    assert runner.commands[-1] == (
        "rm -f /srv/b/20261202T031700Z.partial/manifest.json && rm -rf /srv/b/20261202T031700Z.partial"
    )
