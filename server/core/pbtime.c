/* Timestamp and Duration messages from microseconds (pbtime.h). */
#include "core/pbtime.h"

Google__Protobuf__Timestamp *az_pbtime_timestamp(az_arena *a, int64_t us)
{
    Google__Protobuf__Timestamp *t = az_arena_alloc(a, sizeof *t);
    if (!t) return NULL;
    google__protobuf__timestamp__init(t);
    t->seconds = us / 1000000;
    t->nanos = (int32_t)(us % 1000000) * 1000;
    if (t->nanos < 0) { /* C division truncates toward zero; Timestamp nanos are never negative */
        t->seconds--;
        t->nanos += 1000000000;
    }
    return t;
}

Google__Protobuf__Duration *az_pbtime_duration(az_arena *a, int64_t us)
{
    Google__Protobuf__Duration *d = az_arena_alloc(a, sizeof *d);
    if (!d) return NULL;
    google__protobuf__duration__init(d);
    d->seconds = us / 1000000;
    d->nanos = (int32_t)(us % 1000000) * 1000;
    return d;
}
