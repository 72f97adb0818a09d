/* google.protobuf.Timestamp and Duration from microseconds (PostgreSQL's resolution), for the
 * services that map rows to messages. */
#ifndef AZ_PBTIME_H
#define AZ_PBTIME_H

#include <stdint.h>

#include "core/arena.h"
#include "google/protobuf/duration.pb-c.h"
#include "google/protobuf/timestamp.pb-c.h"

/* The instant us microseconds after the Unix epoch (negative: before it), in arena, with nanos
 * in 0..999999999 as the Timestamp rules require. NULL when out of memory. */
Google__Protobuf__Timestamp *az_pbtime_timestamp(az_arena *arena, int64_t us);

/* A span of us microseconds, in arena; seconds and nanos carry the same sign, as the Duration
 * rules require. NULL when out of memory. */
Google__Protobuf__Duration *az_pbtime_duration(az_arena *arena, int64_t us);

#endif
