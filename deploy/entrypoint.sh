#!/bin/bash
# The container's command: `newsletter run` and `newsletter serve` side by side. A stop signal reaches both
# (the daemon finishes the message in flight); if either exits on its own, the other is stopped too.
set -u
newsletter run & run=$!
newsletter serve --host 0.0.0.0 --port 8000 & serve=$!
trap 'kill -TERM "$run" "$serve" 2>/dev/null' TERM INT
wait -n "$run" "$serve"
status=$?
kill -TERM "$run" "$serve" 2>/dev/null
wait "$run"
run_status=$?
wait "$serve"
if [ "$status" -gt 128 ]; then status=$run_status; fi  # we were signalled: report how the daemon stopped
exit "$status"
