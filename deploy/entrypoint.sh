#!/bin/sh
# Container entrypoint of the mrdserve image (also runs outside Docker: tests/deploy/test_entrypoint.py).
#
# Settings are MRDSERVE_* variables (see service/config.py); this script only checks what a container gets wrong
# most often (artifact mount missing, spool not writable on a read-only root filesystem) with a message that says
# what to fix, then replaces itself with the command:
#   (no argument) | serve [FLAGS]         -> mrdserve serve [FLAGS]   (REST on MRDSERVE_PORT, MRD on MRDSERVE_MRD_PORT)
#   recon|simulate|models|train|export|evaluate ... -> mrdserve <subcommand> ...
#   anything else                         -> run as given (e.g. a shell for debugging)
set -eu

fail() {
    echo "mrdserve-entrypoint: $*" >&2
    exit 64
}

if [ "$#" -eq 0 ]; then
    set -- serve
fi

case "$1" in
    serve)
        spool="${MRDSERVE_SPOOL_DIR:-${TMPDIR:-/tmp}/mrdserve/spool}"
        mkdir -p "$spool" 2>/dev/null || fail "cannot create the spool directory $spool (MRDSERVE_SPOOL_DIR); mount a writable volume there"
        [ -w "$spool" ] || fail "the spool directory $spool (MRDSERVE_SPOOL_DIR) is not writable by uid $(id -u); mount a writable volume there"
        if [ -n "${MRDSERVE_ARTIFACTS:-}" ]; then
            old_ifs=$IFS
            IFS=:
            for directory in $MRDSERVE_ARTIFACTS; do
                [ -d "$directory" ] || fail "artifact directory $directory (MRDSERVE_ARTIFACTS) does not exist; mount the artifacts there or unset MRDSERVE_ARTIFACTS"
            done
            IFS=$old_ifs
        fi
        exec mrdserve "$@"
        ;;
    recon | simulate | models | train | export | evaluate)
        exec mrdserve "$@"
        ;;
    *)
        exec "$@"
        ;;
esac
