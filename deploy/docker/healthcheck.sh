#!/bin/sh
# The image's HEALTHCHECK: the gateway (agentz-gateway, or agentzd with only the gateway role)
# answers GET /readyz on its HTTP port; every other agentzd is asked grpc.health.v1.Health/Check
# for the whole server ("") over h2c, and must answer SERVING. PID 1's command line says which,
# unless the argument does (grpc or http). Ports come from AGENTZ_GRPC_LISTEN / AGENTZ_GATEWAY_LISTEN.
set -eu

port_of() { printf '%s\n' "${1##*:}"; }

kind=${1:-}
if [ -z "$kind" ]; then
    case "$(tr '\0' ' ' </proc/1/cmdline)" in
        *agentz-gateway*|*"--roles gateway "*|*"--roles=gateway "*) kind=http ;;
        *) kind=grpc ;;
    esac
fi

case "$kind" in
    http)
        port=$(port_of "${AGENTZ_GATEWAY_LISTEN:-127.0.0.1:8080}")
        exec curl -fsS -o /dev/null --max-time 4 "http://127.0.0.1:${port}/readyz"
        ;;
    grpc)
        port=$(port_of "${AGENTZ_GRPC_LISTEN:-127.0.0.1:50051}")
        # A gRPC frame holding an empty HealthCheckRequest (service ""); the answer of a SERVING
        # server is the frame 00 00000002 0801 (status = 1).
        answer=$(printf '\000\000\000\000\000' |
            curl -sS --max-time 4 --http2-prior-knowledge -H 'content-type: application/grpc' \
                 -H 'te: trailers' --data-binary @- "http://127.0.0.1:${port}/grpc.health.v1.Health/Check" |
            od -An -tx1 | tr -d ' \n')
        [ "$answer" = "00000000020801" ] || { echo "grpc health: not SERVING (${answer:-no answer})" >&2; exit 1; }
        ;;
    *)
        echo "usage: agentz-healthcheck [grpc|http]" >&2
        exit 2
        ;;
esac
