/* The watch streams (WatchRun, WatchTask, WatchAgents): one engine that replays stored events
 * from the outbox after the client's sequence, then switches to live events from the hub with
 * no gap and no duplicate, paces itself below the stream queue, sends heartbeats and periodic
 * agent metrics, and ends cleanly on shutdown. No thread per stream: a few catch-up threads
 * read the outbox, one timer thread does heartbeats, metrics ticks and paced retries. */
#ifndef AZ_WATCH_H
#define AZ_WATCH_H

#include <stddef.h>
#include <stdint.h>

#include "agentz/v1/event.pb-c.h"
#include "core/ctx.h"
#include "core/err.h"
#include "event/hub.h"
#include "rpc/rpc.h"
#include "store/pgpool.h"

/* Limits, also in docs/realtime.md. */
#define AZ_WATCH_AGENT_IDS_MAX 1000  /* WatchAgentsRequest.agent_ids */
#define AZ_WATCH_RUN_TASKS_MAX 100   /* task channels a WatchRun with include_tokens follows */
#define AZ_WATCH_METRICS_AGENTS_MAX 100 /* agents per AgentMetrics tick of one stream */

typedef struct az_watch az_watch;
typedef struct az_watch_stream az_watch_stream;

typedef struct az_watch_config {
    az_pg *pg;               /* borrowed; outbox reads, existence checks, metrics */
    az_hub *hub;             /* borrowed; live events */
    int heartbeat_ms;        /* silence before a Heartbeat event; 0 = 15000 */
    int queue_limit;         /* the server's stream_queue_limit; 0 = 256 */
    int metrics_interval_ms; /* AgentMetrics period of WatchAgents; 0 = 10000 */
    int workers;             /* catch-up threads; 0 = 2 */
} az_watch_config;

typedef enum az_watch_kind {
    AZ_WATCH_RUN = 1,
    AZ_WATCH_TASK = 2,
    AZ_WATCH_AGENTS = 3,
} az_watch_kind;

/* One watch, validated by the API layer (ids are uuids, after_sequence >= 0). */
typedef struct az_watch_request {
    az_watch_kind kind;
    const char *id;         /* the run or task id; ignored for AGENTS */
    int64_t after_sequence; /* RUN/TASK: replay after it (0 = from the start); AGENTS: 0 = only
                             * new events */
    int include_tokens;     /* RUN/TASK: also ephemeral TokenDelta (and, for RUN, the tasks'
                             * other ephemeral events) */
    const char *const *agent_ids; /* AGENTS: only these (n 0 = every agent) */
    size_t n_agent_ids;
    const char *labels_json; /* AGENTS: a label selector as az_agent_parse_selector makes it; NULL
                              * or "" = any */
    int include_metrics;     /* AGENTS: an AgentMetrics event per agent every interval */
} az_watch_request;

/* Where a stream's events go: the gRPC call in production, a recorder in tests. The engine
 * calls these for one stream one at a time (under the stream's lock), from its own threads or
 * the hub's; none may block or call back into the engine. */
typedef struct az_watch_sink {
    /* Queues ev (serialized or copied before returning). AZ_ERR_CANCELLED when the consumer is
     * gone; any error stops the stream. */
    az_err (*send)(void *arg, const Agentz__V1__Event *ev);
    /* Messages queued and not yet delivered. */
    int (*queued)(void *arg);
    /* Ends the stream after what is queued; called at most once per stream. */
    void (*finish)(void *arg, az_err code, const char *msg);
    /* The engine's last use of arg: called once, when the stream's memory goes. May be NULL. */
    void (*release)(void *arg);
    void *arg;
} az_watch_sink;

/* Creates the engine and starts its threads. On error NULL in *out with msg. */
az_err az_watch_new(const az_watch_config *cfg, az_watch **out, char *msg);

/* Starts a watch: checks the run or task exists in ctx's workspace (AZ_ERR_NOT_FOUND), subscribes
 * to its channels (AZ_ERR_UNAVAILABLE when Redis does not confirm within 5 s, AZ_ERR_EXHAUSTED at
 * the hub's bound) and schedules the replay. ctx is used during the call only; its workspace is
 * copied. On AZ_OK *out is the stream: the caller must call az_watch_close(*out) exactly once when
 * the consumer is gone (after it finished, or cancelled); the sink is used until then and
 * release(arg) runs once afterwards. On error nothing of sink is used. */
az_err az_watch_open(az_watch *w, const az_ctx *ctx, const az_watch_request *req,
                     const az_watch_sink *sink, az_watch_stream **out, char *msg);

/* The consumer is gone: unsubscribes; after it returns no sink function but release is called.
 * Accepts NULL. Must not be called from a sink function. */
void az_watch_close(az_watch_stream *s);

/* The gRPC glue for a server-streaming handler: opens req on call c with c as the sink and
 * closes the stream when the call is over. Returns what az_watch_open returns (an error ends
 * the call with it). */
az_err az_watch_serve(az_watch *w, az_call *c, const az_watch_request *req, char *msg);

/* Ends every open stream with UNAVAILABLE "server shutting down; resume with after_sequence =
 * N" (after what is queued) and refuses new ones.
 * Run it from an az_server_on_shutdown hook. */
void az_watch_shutdown(az_watch *w);

/* Streams open now (for metrics). */
size_t az_watch_count(az_watch *w);

/* Stops the threads and frees; every stream must be closed. Accepts NULL. */
void az_watch_free(az_watch *w);

#endif
