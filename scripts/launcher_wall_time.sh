#!/usr/bin/env bash
# Wall time of one 6-job sweep (synthetic, 2 modes x 3 seeds, 1 cycle) under each launcher,
# all logging to the same tracking server (scripts/tracking_server.sh) in one run; each launcher
# gets its own experiment, so none skips what another did. Prints a Markdown table.
#   scripts/launcher_wall_time.sh [CACHE_DIR]
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
export PYTHON="${PYTHON:-$repo/.venv/bin/python}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export RAY_USAGE_STATS_ENABLED=0 RAY_AUTH_MODE=token RAY_AUTH_TOKEN="${RAY_AUTH_TOKEN:-$("$PYTHON" -c 'import secrets; print(secrets.token_hex(16))')}"
cache="${1:-${CHELATION_CACHE:-$HOME/.cache/chelation/embeddings}}"
work="$(mktemp -d /tmp/chelation-wall-time-XXXXXX)" && chmod 755 "$work"
trap 'bash "$repo/scripts/tracking_server.sh" stop "$work/server"; rm -rf "$work"' EXIT
uri="$(bash "$repo/scripts/tracking_server.sh" start "$work/server")"
echo "| launcher | wall time of the sweep (s) | per job (s) |"
echo "| --- | ---: | ---: |"
for launcher in basic joblib ray; do
    extra=()
    [ "$launcher" = joblib ] && extra=(hydra.launcher.n_jobs=2)
    started=$(date +%s.%N)
    "$PYTHON" -m experiments.train -m "hydra/launcher=$launcher" "${extra[@]}" \
        mode=baseline,frozen seed=0,1,2 cycles=1 queries_per_cycle=10 query_cost_sample=0 \
        show_progress=false "cache_dir=$cache" "tracking.uri=$uri" \
        "tracking.experiment=wall-$launcher" "hydra.sweep.dir=$work/$launcher" \
        > "$work/$launcher.log" 2>&1 || { tail -20 "$work/$launcher.log" >&2; exit 1; }
    "$PYTHON" -c "import sys; s = float(sys.argv[2]) - float(sys.argv[1]); print(f'| {sys.argv[3]} | {s:.1f} | {s / 6:.1f} |')" \
        "$started" "$(date +%s.%N)" "$launcher"
done
