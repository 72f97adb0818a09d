#!/bin/sh
# Point-in-time recovery of a backup made by deploy/backup.sh into a fresh directory: restores the
# newest base backup that ends before the target, replays the WAL archive up to the target time
# (or to its end), promotes, and stops PostgreSQL again. The result is an agentzd data dir
# (--data-dir: start `agentzd --data-dir NEWDIR` on it) or a plain cluster dir (--pg-dir).
# docs/operations.md#backup-and-point-in-time-recovery.
#
#   deploy/restore.sh --from /backup/agentz --to '2026-12-07 02:50:00+00' --data-dir /var/lib/agentz-restored
#   deploy/restore.sh --from s3://bucket/agentz --to latest --data-dir NEWDIR
#
# --to TIME      recover every transaction committed at or before TIME (any timestamptz, e.g.
#                '2026-12-07 02:50:00+00'); --to latest replays the whole archive
# --from SRC     backup target given to deploy/backup.sh (a directory or s3://bucket/prefix)
# --data-dir D   new agentzd data dir (must not exist or be empty): D/pg, keys, D/log
# --pg-dir D     new plain PostgreSQL data directory instead (external clusters)
# --wal-dir W    WAL archive, when not SRC/wal
# --backup L     use base backup L (a label under SRC/base) instead of choosing one
# Exit 0 = recovered and promoted; 1 = failed (the message ends with the log's tail); 2 = usage.
set -eu

PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
ME=$(basename "$0")
MARK='# deploy/restore.sh recovery settings'

die() { echo "$ME: $*" >&2; exit 1; }
usage() { sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

from='' target='' data_dir='' pg_dir='' wal_dir='' backup='' s3cfg=${S3CMD_CONFIG:-}
while [ $# -gt 0 ]; do
    case $1 in
    --from) from=${2:?}; shift 2 ;;
    --to|--to-time) target=${2:?}; shift 2 ;;
    --data-dir) data_dir=${2:?}; shift 2 ;;
    --pg-dir) pg_dir=${2:?}; shift 2 ;;
    --wal-dir) wal_dir=${2:?}; shift 2 ;;
    --backup) backup=${2:?}; shift 2 ;;
    --s3cmd-config) s3cfg=${2:?}; shift 2 ;;
    -h|--help) usage ;;
    *) echo "$ME: unknown argument $1" >&2; usage ;;
    esac
done
[ -n "$from" ] && [ -n "$target" ] || usage
[ -n "$data_dir" ] || [ -n "$pg_dir" ] || { echo "$ME: --data-dir or --pg-dir is required" >&2; usage; }
[ -z "$data_dir" ] || [ -z "$pg_dir" ] || die "give --data-dir or --pg-dir, not both"
[ -x "$PGBIN/pg_ctl" ] || die "$PGBIN/pg_ctl not found (install postgresql-15, or set PGBIN)"

if [ "$target" = latest ]; then
    target_s=$(date +%s)
else
    target_s=$(date -d "$target" +%s 2>/dev/null) || die "--to: cannot parse time '$target'"
fi

case $from in
s3://*) s3=1; from=${from%/} ;;
*) s3=0; from=$(cd "$from" 2>/dev/null && pwd) || die "no backup directory $from" ;;
esac
s3cmd_run() {
    command -v s3cmd >/dev/null 2>&1 || die "s3cmd is not installed (apt-get install s3cmd)"
    if [ -n "$s3cfg" ]; then s3cmd -c "$s3cfg" --no-progress "$@"; else s3cmd --no-progress "$@"; fi
}
shq() { printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"; }
# The body of a postgresql.conf string: backslashes are escapes there, quotes are doubled.
confq() { sed -e 's/\\/\\\\/g' -e "s/'/''/g"; }

work=$(mktemp -d "${TMPDIR:-/tmp}/agentz-restore.XXXXXX")
chmod 755 "$work"
pg_pid=''
cleanup() {
    if [ -n "$pg_pid" ] && kill -0 "$pg_pid" 2>/dev/null; then as_pg "$PGBIN/pg_ctl" stop -m immediate -D "$pgdata" >/dev/null 2>&1 || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

# ---- choose the base backup --------------------------------------------------------------------
info_of() { # label -> path of its backup.info (downloaded for s3)
    if [ "$s3" = 1 ]; then
        mkdir -p "$work/info/$1"
        s3cmd_run get --force "$from/base/$1/backup.info" "$work/info/$1/backup.info" >/dev/null 2>&1 || return 1
        echo "$work/info/$1/backup.info"
    else
        [ -f "$from/base/$1/backup.info" ] && echo "$from/base/$1/backup.info"
    fi
}
if [ "$s3" = 1 ]; then
    labels=$(s3cmd_run ls "$from/base/" | awk '$1 == "DIR" {print $2}' | sed 's#/$##; s#.*/##' | sort)
else
    labels=$( [ -d "$from/base" ] && ls "$from/base" | grep -v '\.partial$' | sort || true)
fi
chosen='' chosen_s=0
for l in $labels; do
    [ -z "$backup" ] || [ "$l" = "$backup" ] || continue
    f=$(info_of "$l") || continue
    stop=$(sed -n 's/^stop_time=//p' "$f")
    [ -n "$stop" ] || continue
    stop_s=$(date -d "$stop" +%s) || continue
    # A base backup is usable only for targets after its end (the consistency point); the
    # newest such one leaves the least WAL to replay.
    if [ -n "$backup" ] || { [ "$stop_s" -le "$target_s" ] && [ "$stop_s" -ge "$chosen_s" ]; }; then
        chosen=$l chosen_stop=$stop chosen_s=$stop_s
    fi
done
[ -n "$chosen" ] || die "no base backup in $from/base ends before $target${backup:+ (looked for $backup)}"
echo "$ME: restoring base backup $chosen (consistent after $chosen_stop) to $target"

if [ "$s3" = 1 ]; then
    s3cmd_run get --recursive --force "$from/base/$chosen/" "$work/base/" >/dev/null || die "cannot download $from/base/$chosen"
    base=$work/base
    restore_cmd="s3cmd$( [ -n "$s3cfg" ] && printf ' -c %s' "$(shq "$s3cfg")") --no-progress get --force $(shq "${wal_dir:-$from/wal}")/%f \"%p\""
else
    base=$from/base/$chosen
    wal_dir=${wal_dir:-$from/wal}
    wal_dir=$(cd "$wal_dir" 2>/dev/null && pwd) || die "no WAL archive $wal_dir"
    restore_cmd="cp $(shq "$wal_dir")/%f \"%p\""
fi
[ -f "$base/base.tar.gz" ] || die "$base/base.tar.gz is missing"

# ---- lay out the new directory -----------------------------------------------------------------
if [ -n "$data_dir" ]; then
    mkdir -p "$data_dir"
    data_dir=$(cd "$data_dir" && pwd)
    [ -z "$(ls -A "$data_dir")" ] || die "$data_dir is not empty: restore into a fresh directory"
    chmod 755 "$data_dir"
    pgdata=$data_dir/pg
    logdir=$data_dir/log
    mkdir -m 700 "$pgdata" "$logdir" "$data_dir/run"
else
    mkdir -p "$pg_dir"
    pg_dir=$(cd "$pg_dir" && pwd)
    [ -z "$(ls -A "$pg_dir")" ] || die "$pg_dir is not empty: restore into a fresh directory"
    chmod 700 "$pg_dir"
    pgdata=$pg_dir
    logdir=$work
fi
tar -xzf "$base/base.tar.gz" -C "$pgdata"
[ -f "$base/pg_wal.tar.gz" ] && tar -xzf "$base/pg_wal.tar.gz" -C "$pgdata/pg_wal"
if [ -n "$data_dir" ] && [ -d "$base/files" ]; then
    for f in "$base/files"/*; do [ -f "$f" ] && cp -p "$f" "$data_dir/"; done
    chmod 600 "$data_dir"/*.key "$data_dir"/*.secret 2>/dev/null || true
fi

{
    echo "$MARK (removed after promotion)"
    printf '%s\n' "restore_command = '$(printf '%s' "$restore_cmd" | confq)'"
    [ "$target" = latest ] || echo "recovery_target_time = '$target'"
    echo "recovery_target_timeline = 'latest'"
    echo "recovery_target_action = 'promote'"
    echo "$MARK end"
} >>"$pgdata/postgresql.auto.conf"
touch "$pgdata/recovery.signal"

# PostgreSQL refuses to run as root: as root the cluster belongs to postgres, as agentzd expects.
if [ "$(id -u)" = 0 ]; then
    chown -R postgres:postgres "$pgdata" "$work"
    [ -n "$data_dir" ] && chown postgres:postgres "$logdir" "$data_dir/run"
    as_pg() { runuser -u postgres -- "$@"; }
else
    as_pg() { "$@"; }
fi
chmod 700 "$pgdata"

# ---- recover -----------------------------------------------------------------------------------
start_s=$(date +%s)
sock=$work # short and private: no TCP, no clash with a running cluster
log=$logdir/restore.log
as_pg "$PGBIN/pg_ctl" start -w -t 3600 -D "$pgdata" -l "$log" \
    -o "-p 5432 -k $(shq "$sock") -c listen_addresses='' -c unix_socket_permissions=0700 -c archive_mode=off" >/dev/null ||
    { tail -n 15 "$log" >&2; die "postgresql did not start recovery (log $log)"; }
pg_pid=$(head -n1 "$pgdata/postmaster.pid")
# The embedded cluster's superuser is agentz (trust over the socket); an external one's is
# usually postgres (peer authentication as the postgres account).
pguser=${PGUSER:-agentz}
grep -q '^source=external$' "$base/backup.info" 2>/dev/null && pguser=${PGUSER:-postgres}
q() { as_pg "$PGBIN/psql" -X -A -t -q -h "$sock" -p 5432 -U "$pguser" -d postgres -c "$1"; }
while :; do
    if ! kill -0 "$pg_pid" 2>/dev/null; then
        tail -n 15 "$log" >&2
        die "recovery failed (log $log)"
    fi
    r=$(q "SELECT pg_is_in_recovery()" 2>/dev/null || true)
    [ "$r" = f ] && break
    sleep 0.2
done
as_pg "$PGBIN/pg_ctl" stop -m fast -w -t 300 -D "$pgdata" >/dev/null || die "cannot stop the recovered cluster"
pg_pid=''

# The recovery settings are spent; drop them so nothing replays the archive again.
sed -i "\\|^$MARK (removed after promotion)\$|,\\|^$MARK end\$|d" "$pgdata/postgresql.auto.conf"
grep -qF "$MARK" "$pgdata/postgresql.auto.conf" && die "cannot remove the recovery settings from $pgdata/postgresql.auto.conf"
stopped=$(grep -E 'recovery stopping|last completed transaction' "$log" | tail -n 2 | sed 's/^.*LOG:  //' | tr '\n' ' ')
echo "$ME: recovered and promoted in $(( $(date +%s) - start_s ))s: ${stopped:-see $log}"
if [ -n "$data_dir" ]; then
    echo "$ME: start agentzd on it: agentzd --data-dir $data_dir"
else
    echo "$ME: start PostgreSQL on $pg_dir"
fi
