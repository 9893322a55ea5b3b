"""Back up, verify, restore and prune the named volumes of a stack's hosts.

Each archive streams from the host (tar | zstd run there) over SSH straight into the snapshot
directory on this machine, hashed on the way: nothing is staged on the host. A snapshot is
written as `<id>.partial/` and renamed to `<id>/` only after every archive and its manifest are
on disk, so an interrupted or failed backup never looks complete. This package never prints.

Where things are: model (the values), facts (what a host has), recipes/ (how each kind of volume
is archived, checked and restored), stores (where archives go), catalogue (the snapshots here),
take, verify, restore, drill (a restore into a throwaway copy of the stack, checked), retention,
schedule, offsite/ (copies to S3 or an SSH server, one module each; fetch back).
"""

from ops.backup.catalogue import (
    DRILL,
    INFO,
    MANIFEST,
    PARTIAL,
    backup_info,
    find_snapshot,
    last_drill,
    list_snapshots,
    new_snapshot_id,
    read_snapshot,
    target_dir,
    write_drill,
)
from ops.backup.commands import as_root, compression_level, compressor, decompressor, tar_command
from ops.backup.drill import CopyPlan, drill, drill_project, plan_copy
from ops.backup.facts import parse_containers, parse_volumes, read_volume_facts
from ops.backup.model import (
    ArchiveRecord,
    BackupResult,
    ContainerFact,
    DrilledVolume,
    DrillResult,
    OffsiteResult,
    PruneResult,
    RestoreResult,
    Snapshot,
    VerifyResult,
    VolumeFact,
)
from ops.backup.offsite import (
    OffsiteStore,
    copy_offsite,
    fetch_snapshot,
    offsite_snapshots,
    offsite_store,
    ssh_target,
)
from ops.backup.recipes import RECIPES, Recipe, detect, detect_recipe
from ops.backup.recipes.postgres import pg_dump_command, psql_restore_command
from ops.backup.recipes.prometheus import snapshot_name
from ops.backup.restore import RestoreTarget, restore, restore_command, restore_selection
from ops.backup.retention import RetentionPolicy, prune, retention
from ops.backup.schedule import check_cron, cron_line, drill_cron_line, edit_crontab, schedule
from ops.backup.stores import ArchiveStore, HostStore, LocalStore, host_store, sha256_file, snapshot_store
from ops.backup.take import BackupOptions, VolumePlan, archive_volume, backup_all, plan_volume, select_volumes
from ops.backup.verify import test_extract_command, verify

__all__ = [
    "DRILL",
    "INFO",
    "MANIFEST",
    "PARTIAL",
    "RECIPES",
    "ArchiveRecord",
    "ArchiveStore",
    "BackupOptions",
    "BackupResult",
    "ContainerFact",
    "CopyPlan",
    "DrillResult",
    "DrilledVolume",
    "HostStore",
    "LocalStore",
    "OffsiteResult",
    "OffsiteStore",
    "PruneResult",
    "Recipe",
    "RestoreResult",
    "RestoreTarget",
    "RetentionPolicy",
    "Snapshot",
    "VerifyResult",
    "VolumeFact",
    "VolumePlan",
    "archive_volume",
    "as_root",
    "backup_all",
    "backup_info",
    "check_cron",
    "compression_level",
    "compressor",
    "copy_offsite",
    "cron_line",
    "decompressor",
    "detect",
    "detect_recipe",
    "drill",
    "drill_cron_line",
    "drill_project",
    "edit_crontab",
    "fetch_snapshot",
    "find_snapshot",
    "host_store",
    "last_drill",
    "list_snapshots",
    "new_snapshot_id",
    "offsite_snapshots",
    "offsite_store",
    "parse_containers",
    "parse_volumes",
    "pg_dump_command",
    "plan_copy",
    "plan_volume",
    "prune",
    "psql_restore_command",
    "read_snapshot",
    "read_volume_facts",
    "restore",
    "restore_command",
    "restore_selection",
    "retention",
    "schedule",
    "select_volumes",
    "sha256_file",
    "snapshot_name",
    "snapshot_store",
    "ssh_target",
    "tar_command",
    "target_dir",
    "test_extract_command",
    "verify",
    "write_drill",
]
