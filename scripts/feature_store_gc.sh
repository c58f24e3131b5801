#!/usr/bin/env bash
# Run `jules-cache gc` from cron: one run at a time, a JSON and a text log per run.
#
#   # m h dom mon dow  command
#   17 3 * * *  FEATURE_STORE_PATH=/data/feature_cache /opt/jules_cache/scripts/feature_store_gc.sh
#
# Environment:
#   FEATURE_STORE_PATH                 cache root (required)
#   FEATURE_STORE_GC_RETENTION_WEEKS   delete entries not accessed for N weeks (default 4)
#   FEATURE_STORE_GC_DRY_RUN           1/true/yes: delete nothing, log what would go (default 0)
#   FEATURE_STORE_LOG_DIR              where logs go (default $FEATURE_STORE_PATH/gc-logs);
#                                      logs older than 30 days are deleted
#   FEATURE_STORE_GC_ARGS              extra arguments for `jules-cache gc`, e.g. "--max-size 50GB"
#
# Exit status: that of `jules-cache gc` (0 done, 1 failed, 75 busy: another run holds the lock),
# or 1 if this script cannot start it.
set -uo pipefail

root="${FEATURE_STORE_PATH:-}"
if [ -z "$root" ]; then
    echo "feature_store_gc: set FEATURE_STORE_PATH to the cache root" >&2
    exit 1
fi
log_dir="${FEATURE_STORE_LOG_DIR:-$root/gc-logs}"
retention="${FEATURE_STORE_GC_RETENTION_WEEKS:-4}"
dry_run="${FEATURE_STORE_GC_DRY_RUN:-0}"

if ! mkdir -p "$log_dir" "$root/locks"; then
    echo "feature_store_gc: cannot create $log_dir or $root/locks" >&2
    exit 1
fi

stamp="$(date -u +%Y%m%dT%H%M%SZ)-$$"
json_log="$log_dir/gc-$stamp.json"
text_log="$log_dir/gc-$stamp.log"

log() { echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) $*" >> "$text_log"; }

# Logs older than 30 days go first, so a failing run still prunes.
find "$log_dir" -maxdepth 1 -type f \( -name 'gc-*.json' -o -name 'gc-*.log' \) -mtime +30 -delete

# One run at a time per cache root (the lock file is not one GC ever deletes).
exec 9>"$root/locks/gc-cron.lock"
if ! flock -n 9; then
    log "another feature_store_gc run holds $root/locks/gc-cron.lock; try later"
    exit 75
fi

if command -v jules-cache > /dev/null 2>&1; then
    cmd=(jules-cache)
else
    cmd=("${PYTHON:-python3}" -m jules_cache)
fi
args=(gc --root "$root" --retention-weeks "$retention" --json)
case "$(echo "$dry_run" | tr '[:upper:]' '[:lower:]')" in
    1 | true | yes | on) args+=(--dry-run) ;;
esac
# shellcheck disable=SC2206  # word splitting of the extra arguments is intended
extra=(${FEATURE_STORE_GC_ARGS:-})
args+=("${extra[@]}")

log "start: ${cmd[*]} ${args[*]}"
"${cmd[@]}" "${args[@]}" > "$json_log" 2>> "$text_log"
status=$?
log "exit status $status (0 done, 1 failed, 75 busy); report: $json_log"
# The report's per-reason summary, readable in the text log.
"${PYTHON:-python3}" - "$json_log" >> "$text_log" 2>&1 <<'PY' || true
import json, sys
doc = json.load(open(sys.argv[1]))
print(f"status {doc.get('status')}  run {doc.get('run_id')}  dry_run {doc.get('dry_run')}")
for total in doc.get("totals", []):
    print(f"  {total['reason']:<12} {total['count']:>10,} {total['bytes']:>16,} bytes")
if "max_lock_hold_ms" in doc:
    print(f"  duration {doc['duration_seconds']:.2f} s, longest lock hold "
          f"{doc['max_lock_hold_ms']:.1f} ms")
for error in doc.get("errors") or ([doc["error"]] if doc.get("error") else []):
    print(f"  error: {error}")
PY
exit "$status"
