#!/bin/sh
# Base backup of AGENTZ's PostgreSQL (pg_basebackup, WAL included) into a directory or an
# S3-compatible bucket, next to the continuous WAL archive that point-in-time recovery
# (deploy/restore.sh) replays. docs/operations.md#backup-and-point-in-time-recovery.
#
#   deploy/backup.sh --data-dir /var/lib/agentz --to /backup/agentz        # embedded cluster
#   deploy/backup.sh --database-url postgresql://... --to /backup/agentz   # external cluster
#   deploy/backup.sh --data-dir DATA --to s3://bucket/agentz               # via s3cmd
#   deploy/backup.sh --archive-command --to TARGET    # prints archive_command for an external cluster
#   deploy/backup.sh --archive-wal PATH NAME --to s3://bucket/prefix   # (that archive_command, for S3)
#
# Layout of TARGET: base/<UTC label>/{base.tar.gz,pg_wal.tar.gz,backup_manifest,backup.info,files/}
# and wal/<segment files> (the archive; embedded agentzd writes it with
# AGENTZ_WAL_ARCHIVE_DIR=TARGET/wal). Exit 0 = backup complete; 1 = failed; 2 = usage.
set -eu

PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
ME=$(basename "$0")
SELF=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")

die() { echo "$ME: $*" >&2; exit 1; }
usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

data_dir='' db_url='' to='' label='' archive_wal='' print_archive='' wait_archive=60
s3cfg=${S3CMD_CONFIG:-}
while [ $# -gt 0 ]; do
    case $1 in
    --data-dir) data_dir=${2:?}; shift 2 ;;
    --database-url) db_url=${2:?}; shift 2 ;;
    --to) to=${2:?}; shift 2 ;;
    --label) label=${2:?}; shift 2 ;;
    --s3cmd-config) s3cfg=${2:?}; shift 2 ;;
    --wait-archive) wait_archive=${2:?}; shift 2 ;;
    --archive-wal) archive_wal=1; wal_path=${2:?}; wal_name=${3:?}; shift 3 ;;
    --archive-command) print_archive=1; shift ;;
    -h|--help) usage ;;
    *) echo "$ME: unknown argument $1" >&2; usage ;;
    esac
done
[ -n "$to" ] || { echo "$ME: --to DIR or --to s3://bucket/prefix is required" >&2; usage; }

case $to in
s3://*) s3=1; to=${to%/} ;;
*) s3=0 ;;
esac

s3cmd_run() {
    command -v s3cmd >/dev/null 2>&1 || die "s3cmd is not installed (apt-get install s3cmd)"
    if [ -n "$s3cfg" ]; then s3cmd -c "$s3cfg" --no-progress "$@"; else s3cmd --no-progress "$@"; fi
}

# Single-quotes $1 for /bin/sh.
shq() { printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"; }
# The body of a postgresql.conf string: backslashes are escapes there, quotes are doubled.
confq() { sed -e 's/\\/\\\\/g' -e "s/'/''/g"; }

# ---- archive_command for external clusters -----------------------------------------------------
if [ -n "$print_archive" ]; then
    if [ "$s3" = 1 ]; then
        cfg=''
        [ -n "$s3cfg" ] && cfg=" --s3cmd-config $(shq "$s3cfg")"
        printf '%s\n' "archive_command = '$(printf '%s' "$(shq "$SELF") --archive-wal \"%p\" \"%f\" --to $(shq "$to")$cfg" | confq)'"
    else
        d=$(shq "$to/wal")
        cmd="D=$d; if test -f \"\$D/%f\"; then cmp -s \"%p\" \"\$D/%f\"; else cp \"%p\" \"\$D/%f.tmp\" && sync \"\$D/%f.tmp\" && mv \"\$D/%f.tmp\" \"\$D/%f\" && sync \"\$D\"; fi"
        printf '%s\n' "archive_command = '$(printf '%s' "$cmd" | confq)'"
    fi
    echo "archive_mode = on"
    echo "archive_timeout = 60s"
    echo "wal_level = replica"
    exit 0
fi

# ---- one WAL segment to S3 (archive_command) ---------------------------------------------------
if [ -n "$archive_wal" ]; then
    [ "$s3" = 1 ] || die "--archive-wal is for s3:// targets (directories use the cp command of --archive-command)"
    dest="$to/wal/$wal_name"
    # Never overwrite: a segment already there with the same bytes is success (a retry after a
    # crash between upload and report), different bytes are an error.
    if s3cmd_run ls "$dest" 2>/dev/null | grep -q " $dest\$"; then
        tmp=$(mktemp)
        trap 'rm -f "$tmp"' EXIT
        s3cmd_run get --force "$dest" "$tmp" >/dev/null && cmp -s "$wal_path" "$tmp"
        exit $?
    fi
    s3cmd_run put "$wal_path" "$dest" >/dev/null
    exit 0
fi

# ---- base backup -------------------------------------------------------------------------------
if [ -n "$data_dir" ] && [ -n "$db_url" ]; then die "give --data-dir or --database-url, not both"; fi
if [ -z "$data_dir" ] && [ -z "$db_url" ]; then
    db_url=${AGENTZ_DATABASE_URL:-}
    [ -n "$db_url" ] || data_dir=${AGENTZ_DATA_DIR:-./.agentz}
fi
[ -x "$PGBIN/pg_basebackup" ] || die "$PGBIN/pg_basebackup not found (install postgresql-15, or set PGBIN)"

if [ -n "$data_dir" ]; then
    data_dir=$(cd "$data_dir" 2>/dev/null && pwd) || die "no data dir $data_dir"
    [ -f "$data_dir/pg/PG_VERSION" ] || die "$data_dir/pg is not a PostgreSQL cluster (is this an agentzd data dir?)"
    sock=$data_dir/run
    [ -f "$data_dir/run/socket_dir" ] && sock=$(head -n1 "$data_dir/run/socket_dir")
    [ -S "$sock/.s.PGSQL.5432" ] || die "no embedded postgresql answers in $sock: start agentzd on $data_dir first"
    conn="host=$sock port=5432 user=agentz dbname=agentz"
else
    conn=$db_url
fi

q() { "$PGBIN/psql" -X -A -t -q -v ON_ERROR_STOP=1 -d "$conn" -c "$1"; }

q "SELECT 1" >/dev/null || die "cannot connect to postgresql ($conn)"
archive_mode=$(q "SHOW archive_mode")
archive_cmd=$(q "SHOW archive_command")
if [ "$archive_mode" != on ]; then
    echo "$ME: warning: archive_mode is off: this backup restores only to its own end; for" \
        "point-in-time recovery start agentzd with AGENTZ_WAL_ARCHIVE_DIR=$to/wal (embedded) or" \
        "set the lines of '$ME --archive-command --to $to' (external)" >&2
elif [ "$s3" = 0 ] && ! printf '%s' "$archive_cmd" | grep -qF -e "$to/wal" -e "$(shq "$to/wal")"; then
    echo "$ME: warning: WAL is archived by '$archive_cmd', not into $to/wal: pass that directory" \
        "to deploy/restore.sh with --wal-dir" >&2
fi

[ -n "$label" ] || label=$(date -u +%Y%m%dT%H%M%SZ)
if [ "$s3" = 1 ]; then
    stage=$(mktemp -d "${TMPDIR:-/tmp}/agentz-backup.XXXXXX")
    trap 'rm -rf "$stage"' EXIT
    dest=$stage/$label
else
    mkdir -p "$to/base" "$to/wal"
    dest=$to/base/$label
    [ ! -e "$dest" ] || die "$dest exists already"
fi

start_time=$(date -u '+%Y-%m-%d %H:%M:%S+00')
start_s=$(date +%s)
echo "$ME: base backup of $( [ -n "$data_dir" ] && echo "embedded $data_dir" || echo external) into $dest"
# -X stream: the backup carries the WAL it needs, so it restores even without the archive;
# -c fast: an immediate checkpoint instead of waiting for the next spread one.
"$PGBIN/pg_basebackup" -d "$conn" -D "$dest.partial" -Ft -z -X stream -c fast -l "agentz $label" \
    --no-password || { rm -rf "$dest.partial"; die "pg_basebackup failed"; }

# The backup's last WAL segment, archived too, so the archive alone holds everything.
if [ "$archive_mode" = on ] && seg=$(q "SELECT pg_walfile_name(pg_switch_wal())" 2>/dev/null); then
    waited=0
    while [ "$waited" -lt "$wait_archive" ]; do
        last=$(q "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")
        # Segment names sort in WAL order within a timeline.
        if [ -n "$last" ] && [ "$(printf '%s\n%s\n' "$seg" "$last" | sort | tail -n1)" = "$last" ]; then break; fi
        sleep 1
        waited=$((waited + 1))
    done
    [ "$waited" -lt "$wait_archive" ] ||
        echo "$ME: warning: segment $seg was not archived within ${wait_archive}s: check archive_command (postgres log)" >&2
fi
stop_time=$(date -u '+%Y-%m-%d %H:%M:%S+00')

# The embedded default keeps keys beside the cluster: without master.key the restored secrets
# cannot be decrypted. Protect the backup like the keys themselves.
if [ -n "$data_dir" ]; then
    mkdir -p "$dest.partial/files"
    for f in master.key webhook.secret admin.key; do
        [ -f "$data_dir/$f" ] && cp -p "$data_dir/$f" "$dest.partial/files/$f"
    done
    chmod -R go-rwx "$dest.partial/files"
fi
{
    echo "label=$label"
    echo "start_time=$start_time"
    echo "stop_time=$stop_time"
    echo "source=$( [ -n "$data_dir" ] && echo embedded || echo external)"
    echo "pg_version=$("$PGBIN/pg_basebackup" --version | awk '{print $NF}')"
    echo "archive_mode=$archive_mode"
} >"$dest.partial/backup.info"
sync "$dest.partial"/* 2>/dev/null || sync
mv "$dest.partial" "$dest"

if [ "$s3" = 1 ]; then
    s3cmd_run put --recursive "$dest/" "$to/base/$label/" >/dev/null || die "upload to $to/base/$label failed"
    where="$to/base/$label"
else
    where=$dest
fi
echo "$ME: backup $label complete in $(( $(date +%s) - start_s ))s: $where (consistent after $stop_time)"
