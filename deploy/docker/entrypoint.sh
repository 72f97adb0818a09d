#!/bin/sh
# The image's entrypoint: flags (or "admin ...") go to agentzd; a program name runs that program, so
# `agentz-gateway`, `agentz` and `agentzd` all work as the container's command.
set -eu
case "${1:-}" in
    ""|-*|admin) exec /usr/local/bin/agentzd "$@" ;;
    *) exec "$@" ;;
esac
