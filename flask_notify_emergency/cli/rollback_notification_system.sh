#!/usr/bin/env bash
# Roll the app's notifications back to flash-only delivery, the runbook's way:
#   create-backup --emergency, document-state, notify-rollback-start, verify-rollback-ready,
#   rollback --confirm, verify-rollback, generate-rollback-report.
# Every step is a `flask emergency ...` command; this script only runs them in order and logs.
# Nothing is deleted or dropped: undo with `flask emergency restore --confirm`. Running it again
# after an interruption continues the interrupted rollback.
#
# Usage (from a checkout, or the installed copy: `notify-emergency rollback-script --output FILE`):
#   FLASK_APP='myapp:create_app()' scripts/rollback_notification_system.sh [--reason "why"] \
#       [--planned --request ID] [--dry-run] [--app APP] [--log FILE]
# Without --reason it is an emergency rollback with the default reason (as `rollback --confirm`);
# a planned rollback needs one. The app's own configuration supplies the database and Redis: no
# credential is ever passed on a command line. Log: --log FILE, else $NOTIFY_EMERGENCY_ROLLBACK_LOG,
# else ./notification_rollback.log; when that cannot be written, a file in $TMPDIR (said so).
set -euo pipefail

FLASK="${FLASK:-flask}"
LOG="${NOTIFY_EMERGENCY_ROLLBACK_LOG:-notification_rollback.log}"
GROUP="${NOTIFY_EMERGENCY_CLI_GROUP:-emergency}"
# the same words as `flask emergency rollback --confirm` records without --reason
DEFAULT_REASON="Emergency rollback from the command line"
REASON=""
PLANNED=0
DRY_RUN=0
APP_ARGS=()
ROLLBACK_ARGS=()

usage() {
  sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

while [ $# -gt 0 ]; do
  case "$1" in
    --reason) REASON="${2:-}"; shift 2 ;;
    --planned) ROLLBACK_ARGS+=(--planned); PLANNED=1; shift ;;
    --log) LOG="${2:-}"; shift 2 ;;
    --request) ROLLBACK_ARGS+=(--request "${2:-}"); shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    --app) APP_ARGS=(--app "${2:-}"); shift 2 ;;
    -h|--help) usage ;;
    *) echo "unknown option: $1" >&2; usage ;;
  esac
done
if [ -z "$REASON" ]; then
  if [ "$PLANNED" = 1 ]; then
    echo 'a planned rollback needs a reason: --reason "why we roll back"' >&2
    exit 2
  fi
  REASON="$DEFAULT_REASON"
  echo "No --reason given: emergency rollback, recording \"$REASON\"."
fi
if ! { : >>"$LOG"; } 2>/dev/null; then
  fallback="${TMPDIR:-/tmp}/notification_rollback.log"
  echo "cannot write the log $LOG; logging to $fallback instead (give --log FILE or set NOTIFY_EMERGENCY_ROLLBACK_LOG)" >&2
  LOG="$fallback"
  : >>"$LOG"
fi

run() {
  echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) \$ flask $GROUP $*" | tee -a "$LOG"
  set +e
  "$FLASK" "${APP_ARGS[@]}" "$GROUP" "$@" 2>&1 | tee -a "$LOG"
  local status=${PIPESTATUS[0]}
  set -e
  echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) exit $status" >>"$LOG"
  return "$status"
}

if [ "$DRY_RUN" = 1 ]; then
  run rollback --reason "$REASON" --dry-run "${ROLLBACK_ARGS[@]}"
  run test-rollback --dry-run
  exit 0
fi

run create-backup --emergency --reason "before rollback: $REASON"
run document-state
run notify-rollback-start --reason "$REASON" || echo "warning: no admin channel worked; continuing" | tee -a "$LOG"
run verify-rollback-ready
run rollback --reason "$REASON" --confirm "${ROLLBACK_ARGS[@]}"
verified=0
run verify-rollback || verified=$?
run generate-rollback-report --latest
if [ "$verified" != 0 ]; then
  echo "Rollback done but verification FAILED: see the report and 'flask $GROUP verify-rollback'." | tee -a "$LOG"
  exit 1
fi
echo "Rollback complete and verified. Undo later with: flask $GROUP restore --confirm" | tee -a "$LOG"
